// The HTTP layer of `aquakv serve` (http_server.h): built as the module libaquakv_http.so,
// which make_http_server (http_loader.cpp) loads when `serve` runs.
#include "http_server.h"

#include <httplib.h>

#include <chrono>
#include <ctime>
#include <exception>
#include <map>
#include <mutex>
#include <random>

#include <fmt/format.h>

#include "aquakv/util/error.h"

namespace aquakv::serve {
namespace {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

std::string random_id(const char* prefix) {
  static std::mutex m;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lk(m);
  return fmt::format("{}{:016x}", prefix, rng());
}

// Compares without an early exit, so the time taken does not reveal the key's prefix.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char d = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return d == 0;
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

const char* kRoutes[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"};

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(Scheduler& sched, const Tokenizer& tok, HttpOptions opt);
  int bind() override;
  void run() override;
  void stop() override;

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

}  // namespace

HttpServerImpl::HttpServerImpl(Scheduler& sched, const Tokenizer& tok, HttpOptions opt)
    : sched_(sched), tok_(tok), opt_(std::move(opt)), svr_(std::make_unique<httplib::Server>()) {
  routes();
}

int HttpServerImpl::bind() {
  int port = opt_.port;
  if (port == 0) {
    port = svr_->bind_to_any_port(opt_.host);
  } else if (!svr_->bind_to_port(opt_.host, port)) {
    port = -1;
  }
  if (port < 0) fail("--host {} --port {}: cannot listen there (in use, or not an address of this machine)", opt_.host, opt_.port);
  return port;
}

void HttpServerImpl::run() { svr_->listen_after_bind(); }
void HttpServerImpl::stop() { svr_->stop(); }

void HttpServerImpl::count(const std::string& route, int status) {
  std::lock_guard lk(m_);
  ++requests_[{route, status}];
}

void HttpServerImpl::routes() {
  httplib::Server& s = *svr_;
  // SO_REUSEADDR only: httplib's default SO_REUSEPORT would let a second server bind the same
  // port and silently share its connections.
  s.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.set_payload_max_length(size_t(opt_.max_body_bytes));
  s.set_read_timeout(opt_.read_timeout_s, 0);
  s.set_write_timeout(opt_.read_timeout_s, 0);
  s.set_keep_alive_max_count(100);
  const int n_threads = opt_.http_threads;
  s.new_task_queue = [n_threads] { return new httplib::ThreadPool(size_t(n_threads)); };
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    std::string route = "other";
    for (const char* r : kRoutes)
      if (req.path == r) route = r;
    count(route, res.status);
  });
  // Errors httplib answers itself (no route, body too large, unreadable request) get a JSON body.
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = fmt::format("HTTP {}", res.status);
    if (res.status == 404) msg = fmt::format("no route {} {}", req.method, req.path);
    if (res.status == 413) msg = "the request body is larger than the server's --max-body-bytes";
    if (res.status == 405) msg = fmt::format("method {} is not allowed on {}", req.method, req.path);
    send_error(res, ApiError(res.status, msg));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string msg = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, msg, "", "server_error"));
  });
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !same_secret(auth.substr(7), opt_.api_key)) {
      send_error(res, ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", "", "authentication_error"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  const int64_t started = int64_t(std::time(nullptr));
  s.Get("/v1/models", [this, started](const httplib::Request&, httplib::Response& res) {
    const json m = {{"id", opt_.model_id}, {"object", "model"}, {"created", started}, {"owned_by", "aquakv"}};
    res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
  for (const auto& [path, ep] : {std::pair{"/v1/chat/completions", Endpoint::kChat}, std::pair{"/v1/completions", Endpoint::kCompletion}}) {
    const Endpoint endpoint = ep;
    s.Post(path, [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      try {
        generate(req, res, endpoint);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const Error& e) {
        send_error(res, ApiError(400, e.what()));
      }
    });
  }
}

void HttpServerImpl::generate(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  GenerationRequest g = parse_request(req.body, endpoint, opt_.limits);
  if (g.model.empty()) g.model = opt_.model_id;
  if (!g.seed_given) g.sampling.seed = std::random_device{}();
  const std::string text = render_prompt(g, opt_.chat_format);
  JobInput in;
  in.prompt = tok_.encode(text, true, true);
  in.sampling = g.sampling;
  in.max_tokens = g.max_tokens;
  in.stop = g.stop;
  in.ignore_eos = g.ignore_eos;
  auto job = sched_.submit(std::move(in));
  const std::string id = random_id(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  const int64_t created = int64_t(std::time(nullptr));
  // The first event decides the status: an error before any text (e.g. a timeout in the
  // queue) is answered with its own status, streamed or not.
  const double patience = sched_.config().time_limit_s + 60.0;
  const auto t0 = std::chrono::steady_clock::now();
  auto next = [&](JobEvent& e) {
    while (!job->next(e, 1.0)) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > patience) {
        job->cancel();
        throw ApiError(504, "the generation did not finish within the server's time limit", "", "server_error");
      }
    }
  };
  JobEvent first;
  next(first);
  if (first.kind == JobEvent::kError) throw ApiError(first.status, first.error, "", first.status >= 500 ? "server_error" : "invalid_request_error");
  if (!g.stream) {
    std::string out;
    JobEvent e = std::move(first);
    while (e.kind == JobEvent::kText) {
      out += e.text;
      next(e);
    }
    if (e.kind == JobEvent::kError) throw ApiError(e.status, e.error, "", "server_error");
    res.set_content(dump(completion_json(g, id, created, out, e.finish_reason, e.usage)), "application/json");
    return;
  }
  struct Stream {
    std::shared_ptr<Job> job;
    GenerationRequest g;
    std::string id;
    int64_t created = 0;
    std::optional<JobEvent> pending;
    bool first = true, ended = false;
  };
  auto st = std::make_shared<Stream>(Stream{job, std::move(g), id, created, std::move(first), true, false});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st](size_t, httplib::DataSink& sink) {
        JobEvent e;
        if (st->pending) {
          e = std::move(*st->pending);
          st->pending.reset();
        } else if (!st->job->next(e, 1.0)) {
          return sink.is_writable();
        }
        std::string out;
        if (e.kind == JobEvent::kText) {
          out = sse(chunk_json(st->g, st->id, st->created, e.text, st->first, ""));
          st->first = false;
        } else if (e.kind == JobEvent::kDone) {
          if (st->first) out += sse(chunk_json(st->g, st->id, st->created, "", true, ""));
          out += sse(chunk_json(st->g, st->id, st->created, "", false, e.finish_reason));
          if (st->g.include_usage) out += sse(usage_chunk_json(st->g, st->id, st->created, e.usage));
          out += "data: [DONE]\n\n";
          st->ended = true;
        } else {
          out = sse(error_json(ApiError(e.status, e.error, "", "server_error")));
          st->ended = true;
        }
        if (!sink.write(out.data(), out.size())) {
          st->job->cancel();
          return false;
        }
        if (st->ended) sink.done();
        return true;
      },
      [st](bool) {
        if (!st->ended) st->job->cancel();
      });
}

std::string HttpServerImpl::metrics_text() {
  const SchedulerMetrics m = sched_.metrics();
  const std::string fmt_label = fmt::format("format=\"{}\"", sched_.config().kv_label);
  std::string o;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& labels, double v) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{} {}\n", name, help, name, type, name,
                     labels.empty() ? "" : "{" + labels + "}", v);
  };
  o += "# HELP aquakv_requests_total HTTP requests answered, by route and status.\n# TYPE aquakv_requests_total counter\n";
  {
    std::lock_guard lk(m_);
    for (const auto& [k, n] : requests_)
      o += fmt::format("aquakv_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", k.first, k.second, n);
  }
  metric("aquakv_prompt_tokens_total", "counter", "Prompt tokens submitted.", "", double(m.prompt_tokens));
  metric("aquakv_prompt_tokens_reused_total", "counter", "Prompt tokens restored from a kept slot or a slot file instead of computed.", "", double(m.reused_tokens));
  metric("aquakv_prefill_tokens_total", "counter", "Prompt tokens computed.", "", double(m.prefill_tokens));
  metric("aquakv_generated_tokens_total", "counter", "Tokens generated.", "", double(m.generated_tokens));
  metric("aquakv_decode_seconds_total", "counter", "Seconds spent in batched decode steps (the engine).", "", m.decode_seconds);
  metric("aquakv_prefill_seconds_total", "counter", "Seconds spent computing prompts.", "", m.prefill_seconds);
  metric("aquakv_decode_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s, all conversations.", "", m.decode_tps);
  metric("aquakv_kv_live_bytes", "gauge", "KV cache bytes held by running and idle conversations.", fmt_label, double(m.live_kv_bytes));
  metric("aquakv_kv_reserved_bytes", "gauge", "KV bytes reserved for admitted conversations at their full length.", fmt_label, double(m.reserved_kv_bytes));
  metric("aquakv_kv_budget_bytes", "gauge", "The --kv-budget (0: none).", fmt_label, double(m.budget));
  metric("aquakv_slots_in_use", "gauge", "Conversations being processed (prefill or decode).", "", double(m.running + m.prefilling));
  metric("aquakv_slots_idle", "gauge", "Finished conversations kept in memory for prefix reuse.", "", double(m.idle_slots));
  metric("aquakv_slots_on_disk", "gauge", "Idle conversations moved to slot files.", "", double(m.parked));
  metric("aquakv_queue_length", "gauge", "Requests waiting for a slot or for KV budget.", "", double(m.queued));
  metric("aquakv_slots_moved_to_disk_total", "counter", "Idle conversations written to slot files.", "", double(m.slots_parked));
  metric("aquakv_slots_restored_total", "counter", "Conversations restored from slot files.", "", double(m.slots_restored));
  metric("aquakv_requests_failed_total", "counter", "Generations that ended with an error.", "", double(m.jobs_failed));
  metric("aquakv_slots_in_use_max", "gauge", "Most conversations admitted at once (prefill or decode).", "", double(m.max_in_use));
  metric("aquakv_decode_batch_max", "gauge", "Largest decode batch so far.", "", double(m.max_batch));
  return o;
}

}  // namespace aquakv::serve

extern "C" aquakv::serve::HttpServer* aquakv_http_server_create(aquakv::serve::Scheduler* sched,
                                                                 const aquakv::Tokenizer* tok,
                                                                 const aquakv::serve::HttpOptions* opt,
                                                                 std::string* error) {
  try {
    return new aquakv::serve::HttpServerImpl(*sched, *tok, *opt);
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
}
