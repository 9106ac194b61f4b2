// The HTTP layer of `aquakv serve` (cpp-httplib). Owns: the routes (/v1/chat/completions,
// /v1/completions, /v1/models, /health, /metrics), the API key check, body size and socket
// limits, JSON error bodies for every failed request, server-sent events for streams, request
// counters and the Prometheus text of /metrics. Not: parsing a request's fields
// (api_request.h) or running it (scheduler.h).
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

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

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

class HttpServer {
 public:
  HttpServer(Scheduler& sched, const Tokenizer& tok, HttpOptions opt);
  ~HttpServer();
  // Binds (throws Error when it cannot) and returns the port.
  int bind();
  // Serves until stop() (from another thread).
  void run();
  void stop();

 private:
  void routes();
  void generate(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  std::string metrics_text();
  void count(const std::string& route, int status);

  Scheduler& sched_;
  const Tokenizer& tok_;
  HttpOptions opt_;
  std::unique_ptr<httplib::Server> svr_;
  std::mutex m_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
};

// The prompt text of a request: chat messages through the chat format (with the opening of
// the assistant turn), or the completion prompt as given.
std::string render_prompt(const GenerationRequest& r, ChatFormat f);

}  // namespace aquakv::serve
