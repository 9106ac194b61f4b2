// OpenAI request mapping of `aquakv serve`. Owns: turning the JSON body of /v1/chat/completions
// and /v1/completions into a validated GenerationRequest (messages or prompt, sampling, limits,
// stop strings, streaming), and the JSON the server answers with (completion objects, stream
// chunks, error objects). Not: HTTP (serve_http.cpp), tokenization or scheduling
// (scheduler.h).
//
// Every problem with a body is an ApiError (HTTP status, message naming the field, the field):
// malformed JSON, wrong types, values out of range, unsupported options (n > 1, logprobs,
// tools, penalties other than 0). Unknown fields are ignored, as OpenAI clients send extras.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aquakv/engine/chat_template.h"
#include "aquakv/engine/sampler.h"

namespace aquakv::serve {

// A client error, answered as {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "invalid_request_error")
      : std::runtime_error(std::move(message)), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param, type;
};

enum class Endpoint { kChat, kCompletion };

// Server-side limits and defaults the parser applies.
struct RequestLimits {
  int64_t max_tokens = 1024;        // upper bound of max_tokens (and its default)
  int64_t max_stop = 4;             // stop strings per request
  int64_t max_stop_bytes = 256;     // bytes per stop string
  int64_t max_messages = 1024;      // chat messages per request
  SamplerParams defaults;           // sampling when the request gives none (seed: drawn)
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::kChat;
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completion
  std::string model;                  // as the client named it (echoed back)
  SamplerParams sampling;
  bool seed_given = false;
  int64_t max_tokens = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;           // extension: generate max_tokens even past end-of-generation
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
};

// Parses and validates a body; throws ApiError (400) for anything wrong with it.
GenerationRequest parse_request(std::string_view body, Endpoint endpoint, const RequestLimits& limits);

// The error body.
nlohmann::json error_json(const ApiError& e);

// The prompt text of a request: chat messages through the chat format (with the opening of
// the assistant turn), or the completion prompt as given.
std::string render_prompt(const GenerationRequest& r, ChatFormat f);

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// A whole (non-streamed) answer.
nlohmann::json completion_json(const GenerationRequest& r, const std::string& id, int64_t created,
                               const std::string& text, const std::string& finish_reason, const Usage& u);

// One stream chunk: `delta` text (chat: the role on the first chunk), finish_reason when
// given; usage chunks (include_usage) have no choices.
nlohmann::json chunk_json(const GenerationRequest& r, const std::string& id, int64_t created,
                          const std::string& delta, bool first, const std::string& finish_reason);
nlohmann::json usage_chunk_json(const GenerationRequest& r, const std::string& id, int64_t created, const Usage& u);

// Holds back streamed text that may still turn into a stop string, and ends at the first stop
// string found. push() returns the bytes safe to send (whole UTF-8 characters only).
class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  std::string push(std::string_view piece);
  bool stopped() const { return stopped_; }
  std::string flush();  // at the end: what is left (no stop string matched)
  const std::string& text() const { return text_; }  // everything sent so far

 private:
  std::vector<std::string> stops_;
  std::string pending_, text_;
  bool stopped_ = false;
};

}  // namespace aquakv::serve
