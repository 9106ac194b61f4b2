// OpenAI request mapping (api_request.h).
#include "api_request.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "aquakv/engine/tokenizer.h"

namespace aquakv::serve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& msg) { throw ApiError(400, msg, param); }

// Nesting depth of the JSON text (brackets outside strings). nlohmann parses iteratively, but
// a body of deeply nested arrays is never a valid request: it is refused before parsing.
int max_depth(std::string_view s) {
  int depth = 0, worst = 0;
  bool in_str = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_str) {
      if (c == '\\') ++i;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      worst = std::max(worst, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return worst;
}

const json* field(const json& o, const char* name) {
  const auto it = o.find(name);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json& v, const std::string& param) {
  if (!v.is_string()) bad(param, fmt::format("'{}' must be a string", param));
  return v.get<std::string>();
}

double get_number(const json& o, const char* name, double lo, double hi, double dflt) {
  const json* v = field(o, name);
  if (v == nullptr) return dflt;
  if (!v->is_number()) bad(name, fmt::format("'{}' must be a number", name));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x));
  return x;
}

int64_t get_int(const json& o, const char* name, int64_t lo, int64_t hi, int64_t dflt) {
  const json* v = field(o, name);
  if (v == nullptr) return dflt;
  if (!v->is_number_integer()) bad(name, fmt::format("'{}' must be an integer", name));
  // nlohmann stores non-negative literals as unsigned: compare in the type they are held in.
  const bool out = v->is_number_unsigned()
                       ? v->get<uint64_t>() > uint64_t(hi) || (lo > 0 && v->get<uint64_t>() < uint64_t(lo))
                       : v->get<int64_t>() < lo || v->get<int64_t>() > hi;
  if (out)
    bad(name, fmt::format("'{}' must be in [{}, {}]", name, lo, hi));
  return v->get<int64_t>();
}

bool get_bool(const json& o, const char* name, bool dflt) {
  const json* v = field(o, name);
  if (v == nullptr) return dflt;
  if (!v->is_boolean()) bad(name, fmt::format("'{}' must be true or false", name));
  return v->get<bool>();
}

void check_text(const std::string& s, const std::string& param) {
  if (utf8_first_invalid(s) != std::string::npos) bad(param, fmt::format("'{}' is not valid UTF-8", param));
}

// content: a string, or an array of {"type": "text", "text": ...} parts (concatenated).
std::string message_content(const json& m, const std::string& param) {
  const json* c = field(m, "content");
  if (c == nullptr) return "";
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) bad(param, fmt::format("'{}' must be a string or an array of text parts", param));
  std::string out;
  for (size_t i = 0; i < c->size(); ++i) {
    const json& part = (*c)[i];
    const std::string p = fmt::format("{}[{}]", param, i);
    if (!part.is_object()) bad(p, fmt::format("'{}' must be an object", p));
    const json* type = field(part, "type");
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text")
      bad(p, fmt::format("'{}': only parts of type \"text\" are supported", p));
    const json* text = field(part, "text");
    if (text == nullptr) bad(p + ".text", fmt::format("'{}.text' is missing", p));
    out += get_string(*text, p + ".text");
  }
  return out;
}

std::vector<ChatMessage> parse_messages(const json& o, const RequestLimits& lim) {
  const json* ms = field(o, "messages");
  if (ms == nullptr) bad("messages", "'messages' is required");
  if (!ms->is_array() || ms->empty()) bad("messages", "'messages' must be a non-empty array");
  if (int64_t(ms->size()) > lim.max_messages)
    bad("messages", fmt::format("'messages' holds {} messages, at most {} are accepted", ms->size(), lim.max_messages));
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    const std::string p = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad(p, fmt::format("'{}' must be an object", p));
    const json* role = field(m, "role");
    if (role == nullptr) bad(p + ".role", fmt::format("'{}.role' is missing", p));
    std::string r = get_string(*role, p + ".role");
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant")
      bad(p + ".role", fmt::format("'{}.role' must be system, developer, user or assistant, got \"{}\"", p, r));
    std::string content = message_content(m, p + ".content");
    check_text(content, p + ".content");
    out.push_back({r, std::move(content)});
  }
  return out;
}

std::vector<std::string> parse_stop(const json& o, const RequestLimits& lim) {
  const json* s = field(o, "stop");
  if (s == nullptr) return {};
  std::vector<std::string> out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (const json& x : *s) out.push_back(get_string(x, "stop"));
  } else {
    bad("stop", "'stop' must be a string or an array of strings");
  }
  if (int64_t(out.size()) > lim.max_stop) bad("stop", fmt::format("'stop' holds {} strings, at most {}", out.size(), lim.max_stop));
  for (const auto& x : out) {
    if (x.empty()) bad("stop", "'stop' strings must not be empty");
    if (int64_t(x.size()) > lim.max_stop_bytes) bad("stop", fmt::format("'stop' strings are limited to {} bytes", lim.max_stop_bytes));
    check_text(x, "stop");
  }
  return out;
}

// Options a client may send that the server does not implement: refused rather than ignored,
// so that a client never believes it got what it asked for.
void refuse_unsupported(const json& o) {
  if (get_int(o, "n", 1, 1 << 30, 1) != 1) bad("n", "'n' must be 1 (one choice per request)");
  if (get_number(o, "presence_penalty", -2, 2, 0) != 0) bad("presence_penalty", "'presence_penalty' is not supported (use 0)");
  if (get_number(o, "frequency_penalty", -2, 2, 0) != 0) bad("frequency_penalty", "'frequency_penalty' is not supported (use 0)");
  if (const json* lp = field(o, "logprobs"); lp != nullptr && !(lp->is_boolean() && !lp->get<bool>()))
    bad("logprobs", "'logprobs' is not supported");
  if (const json* t = field(o, "tools"); t != nullptr && !(t->is_array() && t->empty())) bad("tools", "'tools' is not supported");
  if (field(o, "logit_bias") != nullptr && !(*field(o, "logit_bias")).empty()) bad("logit_bias", "'logit_bias' is not supported");
  if (const json* rf = field(o, "response_format"); rf != nullptr) {
    const json* t = rf->is_object() ? field(*rf, "type") : nullptr;
    if (t == nullptr || !t->is_string() || t->get<std::string>() != "text")
      bad("response_format", "'response_format' must be {\"type\": \"text\"}");
  }
  if (get_bool(o, "echo", false)) bad("echo", "'echo' is not supported");
  if (field(o, "suffix") != nullptr) bad("suffix", "'suffix' is not supported");
  if (field(o, "best_of") != nullptr && get_int(o, "best_of", 1, 1 << 30, 1) != 1) bad("best_of", "'best_of' must be 1");
}

}  // namespace

GenerationRequest parse_request(std::string_view body, Endpoint endpoint, const RequestLimits& lim) {
  if (max_depth(body) > 32) bad("", "the JSON body is nested more than 32 levels deep");
  const json o = json::parse(body, nullptr, false);
  if (o.is_discarded()) bad("", "the body is not valid JSON");
  if (!o.is_object()) bad("", "the body must be a JSON object");
  GenerationRequest r;
  r.endpoint = endpoint;
  if (const json* m = field(o, "model")) r.model = get_string(*m, "model");
  if (endpoint == Endpoint::kChat) {
    r.messages = parse_messages(o, lim);
  } else {
    const json* p = field(o, "prompt");
    if (p == nullptr) bad("prompt", "'prompt' is required");
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
    if (!p->is_string()) bad("prompt", "'prompt' must be a string (or an array of one string)");
    r.prompt = p->get<std::string>();
    if (r.prompt.empty()) bad("prompt", "'prompt' is empty");
    check_text(r.prompt, "prompt");
  }
  refuse_unsupported(o);
  const SamplerParams& d = lim.defaults;
  r.sampling.temperature = float(get_number(o, "temperature", 0, 2, d.temperature));
  r.sampling.top_p = float(get_number(o, "top_p", 0, 1, d.top_p));
  r.sampling.min_p = float(get_number(o, "min_p", 0, 1, d.min_p));
  r.sampling.top_k = int(get_int(o, "top_k", 0, 1 << 20, d.top_k));
  if (field(o, "seed") != nullptr) {
    r.sampling.seed = uint64_t(get_int(o, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), 0));
    r.seed_given = true;
  }
  const char* mt = field(o, "max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens";
  r.max_tokens = get_int(o, mt, 1, lim.max_tokens, lim.max_tokens);
  r.stop = parse_stop(o, lim);
  r.stream = get_bool(o, "stream", false);
  r.ignore_eos = get_bool(o, "ignore_eos", false);
  if (const json* so = field(o, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' needs \"stream\": true");
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  return r;
}

nlohmann::json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}, {"code", e.status}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  return {{"error", err}};
}

namespace {
json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}
json finish(const std::string& f) { return f.empty() ? json(nullptr) : json(f); }
}  // namespace

nlohmann::json completion_json(const GenerationRequest& r, const std::string& id, int64_t created,
                               const std::string& text, const std::string& finish_reason, const Usage& u) {
  json choice = {{"index", 0}, {"finish_reason", finish(finish_reason)}, {"logprobs", nullptr}};
  const bool chat = r.endpoint == Endpoint::kChat;
  if (chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
  else choice["text"] = text;
  return {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
          {"model", r.model}, {"choices", json::array({choice})}, {"usage", usage_json(u)}};
}

nlohmann::json chunk_json(const GenerationRequest& r, const std::string& id, int64_t created,
                          const std::string& delta, bool first, const std::string& finish_reason) {
  json choice = {{"index", 0}, {"finish_reason", finish(finish_reason)}, {"logprobs", nullptr}};
  const bool chat = r.endpoint == Endpoint::kChat;
  if (chat) {
    json d = json::object();
    if (first) d["role"] = "assistant";
    if (!delta.empty() || first) d["content"] = delta;
    choice["delta"] = d;
  } else {
    choice["text"] = delta;
  }
  return {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
          {"model", r.model}, {"choices", json::array({choice})}};
}

nlohmann::json usage_chunk_json(const GenerationRequest& r, const std::string& id, int64_t created, const Usage& u) {
  const bool chat = r.endpoint == Endpoint::kChat;
  return {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
          {"model", r.model}, {"choices", json::array()}, {"usage", usage_json(u)}};
}

std::string StopScanner::push(std::string_view piece) {
  if (stopped_) return "";
  pending_ += piece;
  size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    text_ += out;
    return out;
  }
  // Keep the longest suffix that is a prefix of some stop string: it may complete later.
  size_t keep = 0;
  for (const auto& s : stops_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > keep; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  const size_t ok = utf8_complete_prefix(std::string_view(pending_).substr(0, pending_.size() - keep));
  std::string out = pending_.substr(0, ok);
  pending_.erase(0, ok);
  text_ += out;
  return out;
}

std::string StopScanner::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  text_ += out;
  return out;
}

std::string render_prompt(const GenerationRequest& r, ChatFormat f) {
  if (r.endpoint == Endpoint::kCompletion) return r.prompt;
  return render_chat(f, r.messages, true);
}

}  // namespace aquakv::serve
