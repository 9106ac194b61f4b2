// libFuzzer entry for the OpenAI request parser of `aquakv serve` (tools/aquakv/serve/
// api_request.h): byte 0 chooses the endpoint (even: chat, odd: completions), the rest is the
// body. Every input must parse or throw ApiError with a 4xx status; parsed requests are
// rendered through the chat format, answered as JSON (whole and as stream chunks) and their
// stop strings are run over the prompt text, as the server would.
// The corpus fuzz/corpus/request is replayed by CTest (fuzz_replay_request).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "aquakv/util/error.h"
#include "serve/api_request.h"
#include "serve/http_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aquakv::serve;
  if (size == 0) return 0;
  const Endpoint ep = data[0] % 2 == 0 ? Endpoint::kChat : Endpoint::kCompletion;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  RequestLimits lim;
  lim.max_tokens = 256;
  try {
    const GenerationRequest r = parse_request(body, ep, lim);
    const std::string text = render_prompt(r, aquakv::ChatFormat::kChatML);
    StopScanner stop(r.stop);
    for (size_t i = 0; i < text.size(); i += 7) (void)stop.push(std::string_view(text).substr(i, 7));
    (void)stop.flush();
    const Usage u{1, 2, 0};
    (void)completion_json(r, "id", 0, stop.text(), "stop", u).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    (void)chunk_json(r, "id", 0, text, true, "").dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
    (void)error_json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const aquakv::Error&) {  // render_chat: unknown roles (the parser refuses them first)
  }
  return 0;
}
