// The HTTP layer of `aquakv serve` (cpp-httplib). Owns: the routes (/v1/chat/completions,
// /v1/completions, /v1/models, /health, /metrics), the API key check, body size and socket
// limits, JSON error bodies for every failed request, server-sent events for streams, request
// counters and the Prometheus text of /metrics. Not: parsing a request's fields
// (api_request.h) or running it (scheduler.h), or rendering a request's prompt (render_prompt,
// api_request.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "aquakv/engine/chat_template.h"
#include "aquakv/engine/tokenizer.h"
#include "api_request.h"
#include "scheduler.h"

namespace aquakv::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                // 0: any free port
  std::string api_key;            // "" = none
  int64_t max_body_bytes = 1 << 20;
  int read_timeout_s = 30;        // a client that sends nothing for this long is dropped
  int http_threads = 8;           // connections served at once
  std::string model_id;           // /v1/models and responses
  ChatFormat chat_format = ChatFormat::kChatML;
  RequestLimits limits;
};

// The server over a scheduler and its tokenizer.
class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // Binds (throws Error when it cannot) and returns the port.
  virtual int bind() = 0;
  // Serves until stop() (from another thread).
  virtual void run() = 0;
  virtual void stop() = 0;
};

// The server lives in a module of its own, kHttpModule beside the executable (http_server.cpp,
// linked with cpp-httplib), loaded only here: cpp-httplib brings OpenSSL, brotli and zlib, whose
// pages and start-up (OpenSSL's initialization runs when the library loads) cost every other
// command ~5 MiB of resident memory (docs/RESULTS.md, "Memory: what the process holds beyond the
// model and the cache"). The module resolves the rest of aquakv from the executable, which
// exports its symbols. Throws Error naming the module when it cannot be loaded.
inline constexpr const char* kHttpModule = "libaquakv_http.so";
std::unique_ptr<HttpServer> make_http_server(Scheduler& sched, const Tokenizer& tok, const HttpOptions& opt);

}  // namespace aquakv::serve

// The module's entry point (C linkage, found with dlsym): a new server, or null with *error set.
extern "C" aquakv::serve::HttpServer* aquakv_http_server_create(aquakv::serve::Scheduler* sched,
                                                                 const aquakv::Tokenizer* tok,
                                                                 const aquakv::serve::HttpOptions* opt,
                                                                 std::string* error);
