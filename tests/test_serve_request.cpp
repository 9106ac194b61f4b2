// The OpenAI request mapping of `aquakv serve` (tools/aquakv/serve/api_request.h): what is
// accepted, what is refused with which status and field, the response objects' shape, and the
// stop-string scanner (checked against a plain search of the whole text).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "serve/api_request.h"

using namespace aquakv::serve;
using nlohmann::json;

namespace {

GenerationRequest chat(const std::string& body) { return parse_request(body, Endpoint::kChat, RequestLimits{}); }

// The status and field of the ApiError a body gets ({0, ""} when it parses).
std::pair<int, std::string> refusal(const std::string& body, Endpoint ep = Endpoint::kChat) {
  try {
    parse_request(body, ep, RequestLimits{});
  } catch (const ApiError& e) {
    return {e.status, e.param};
  }
  return {0, ""};
}

const std::string kMsg = R"("messages":[{"role":"user","content":"hi"}])";

}  // namespace

TEST(ServeRequest, ChatFieldsAreRead) {
  const auto r = chat(R"({"model":"x","messages":[{"role":"developer","content":"be brief"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
      "max_tokens":7,"temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,"seed":9,"stop":"END",
      "stream":true,"stream_options":{"include_usage":true},"user":"ignored"})");
  EXPECT_EQ(r.model, "x");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 9u);
  ASSERT_EQ(r.stop.size(), 1u);
  EXPECT_EQ(r.stop[0], "END");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(ServeRequest, DefaultsComeFromTheLimits) {
  RequestLimits lim;
  lim.max_tokens = 33;
  lim.defaults.temperature = 0.25f;
  const auto r = parse_request("{" + kMsg + "}", Endpoint::kChat, lim);
  EXPECT_EQ(r.max_tokens, 33);
  EXPECT_EQ(r.sampling.temperature, 0.25f);
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
  // max_completion_tokens is the newer spelling of max_tokens.
  EXPECT_EQ(parse_request("{" + kMsg + R"(,"max_completion_tokens":5})", Endpoint::kChat, lim).max_tokens, 5);
}

TEST(ServeRequest, CompletionPrompt) {
  EXPECT_EQ(parse_request(R"({"prompt":"abc"})", Endpoint::kCompletion, {}).prompt, "abc");
  EXPECT_EQ(parse_request(R"({"prompt":["abc"]})", Endpoint::kCompletion, {}).prompt, "abc");
  EXPECT_EQ(refusal(R"({"prompt":["a","b"]})", Endpoint::kCompletion), std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(refusal(R"({"prompt":""})", Endpoint::kCompletion).first, 400);
  EXPECT_EQ(refusal(R"({"messages":[]})", Endpoint::kCompletion).second, "prompt");
}

TEST(ServeRequest, BadBodiesAreRefusedNamingTheField) {
  using P = std::pair<int, std::string>;
  EXPECT_EQ(refusal(""), P(400, ""));
  EXPECT_EQ(refusal("{"), P(400, ""));
  EXPECT_EQ(refusal("[1]"), P(400, ""));
  EXPECT_EQ(refusal(std::string(40, '[') + std::string(40, ']')), P(400, ""));
  EXPECT_EQ(refusal("{}"), P(400, "messages"));
  EXPECT_EQ(refusal(R"({"messages":[]})"), P(400, "messages"));
  EXPECT_EQ(refusal(R"({"messages":[{"content":"x"}]})"), P(400, "messages[0].role"));
  EXPECT_EQ(refusal(R"({"messages":[{"role":"tool","content":"x"}]})"), P(400, "messages[0].role"));
  EXPECT_EQ(refusal(R"({"messages":[{"role":"user","content":7}]})"), P(400, "messages[0].content"));
  EXPECT_EQ(refusal(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})"), P(400, "messages[0].content[0]"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"max_tokens":0})"), P(400, "max_tokens"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"max_tokens":1.5})"), P(400, "max_tokens"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"max_tokens":99999999999999999999})"), P(400, "max_tokens"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"max_tokens":100000})"), P(400, "max_tokens"));  // > limits
  EXPECT_EQ(refusal("{" + kMsg + R"(,"temperature":-0.1})"), P(400, "temperature"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"temperature":"1"})"), P(400, "temperature"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"top_p":1.5})"), P(400, "top_p"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"n":2})"), P(400, "n"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"stop":[1]})"), P(400, "stop"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"stop":[""]})"), P(400, "stop"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"stop":["a","b","c","d","e"]})"), P(400, "stop"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"stream":"yes"})"), P(400, "stream"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"stream_options":{"include_usage":true}})"), P(400, "stream_options"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"logprobs":true})"), P(400, "logprobs"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"presence_penalty":0.5})"), P(400, "presence_penalty"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"tools":[{"type":"function"}]})"), P(400, "tools"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"response_format":{"type":"json_object"}})"), P(400, "response_format"));
  EXPECT_EQ(refusal("{" + kMsg + R"(,"seed":"x"})"), P(400, "seed"));
  EXPECT_EQ(refusal(R"({"messages":[{"role":"user","content":"\ud800"}]})").first, 400);
  // Accepted: zero penalties, logprobs false, empty tools, a text response format, null fields.
  EXPECT_EQ(refusal("{" + kMsg + R"(,"presence_penalty":0,"logprobs":false,"tools":[],"response_format":{"type":"text"},"temperature":null})").first, 0);
}

TEST(ServeRequest, RandomBytesNeverEscapeAsAnythingButApiError) {
  std::mt19937 rng(7);
  const std::string alphabet = "{}[]\":,0123456789.-eE truefalsnl\\u\x01\xff";
  for (int i = 0; i < 3000; ++i) {
    std::string s = "{" + kMsg + ",";
    const int n = int(rng() % 40);
    for (int k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
    for (Endpoint ep : {Endpoint::kChat, Endpoint::kCompletion}) {
      try {
        parse_request(s, ep, {});
      } catch (const ApiError& e) {
        EXPECT_GE(e.status, 400);
        EXPECT_LT(e.status, 500);
      }
    }
  }
}

TEST(ServeRequest, ResponseObjects) {
  auto r = chat("{" + kMsg + "}");
  r.model = "m";
  const json c = completion_json(r, "id1", 5, "hello", "stop", Usage{3, 2, 1});
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  EXPECT_EQ(c["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
  const json k = chunk_json(r, "id1", 5, "he", true, "");
  EXPECT_EQ(k["object"], "chat.completion.chunk");
  EXPECT_EQ(k["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(k["choices"][0]["delta"]["content"], "he");
  EXPECT_TRUE(k["choices"][0]["finish_reason"].is_null());
  const auto t = parse_request(R"({"prompt":"x"})", Endpoint::kCompletion, {});
  EXPECT_EQ(completion_json(t, "i", 0, "y", "length", {})["choices"][0]["text"], "y");
  const json e = error_json(ApiError(400, "bad", "max_tokens"));
  EXPECT_EQ(e["error"]["message"], "bad");
  EXPECT_EQ(e["error"]["param"], "max_tokens");
  EXPECT_EQ(e["error"]["code"], 400);
}

// Streaming through the scanner in pieces of any size sends exactly the text before the first
// stop string (or all of it), never a byte of the stop string itself.
TEST(ServeRequest, StopScannerMatchesAWholeTextSearch) {
  std::mt19937 rng(3);
  const std::vector<std::string> stops = {"ab", "bba", "\xc3\xa9x"};
  for (int it = 0; it < 2000; ++it) {
    std::string text;
    const int n = int(rng() % 30);
    for (int k = 0; k < n; ++k) text += "abx\xc3\xa9"[rng() % 5];
    size_t cut = std::string::npos;
    for (const auto& s : stops) cut = std::min(cut, text.find(s));
    const std::string want = text.substr(0, cut);
    StopScanner sc(stops);
    std::string got;
    for (size_t i = 0; i < text.size() && !sc.stopped();) {
      const size_t m = 1 + rng() % 4;
      got += sc.push(std::string_view(text).substr(i, m));
      i += m;
    }
    got += sc.flush();
    ASSERT_EQ(got, want) << "text " << text;
    EXPECT_EQ(sc.stopped(), cut != std::string::npos);
    EXPECT_EQ(sc.text(), want);
  }
}
