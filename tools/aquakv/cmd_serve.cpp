// `aquakv serve`: an OpenAI-compatible HTTP server (serve/http_server.h) over the continuous
// batching scheduler (serve/scheduler.h), with the KV cache in any --kv format and a memory
// budget in bytes of that format. `--capacity N` prints how many N-token conversations the
// budget holds (measured on one N-token sequence) and exits. docs/SERVER.md.
#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "aquakv/engine/chat_template.h"
#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "self_adapters.h"
#include "serve/http_server.h"
#include "serve/kv_budget.h"
#include "serve/scheduler.h"

namespace aquakv::cli {
namespace {

struct Opts {
  std::string model, host = "127.0.0.1", api_key, kv = "fp16", budget = "0", slot_dir, slot_kv, chat_template, alias;
  bool slot_zstd = false;
  int port = 8080, threads = 0, http_threads = 32, parallel = 8;
  int64_t n_ctx = 4096, max_queue = 64, max_tokens = 1024, max_body = 1 << 20, capacity = 0, probe = 512;
  double timeout_s = 600, slot_idle_s = 60;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f;
  int top_k = 40;
  SelfCalibration self_calib;
};

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal = sig; }

// "268435456", "256M", "256MiB", "1.5G": bytes (K/M/G are powers of 1024).
int64_t parse_bytes(const std::string& s, const char* flag) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(s.substr(0, i), &used);
    if (used != i) throw std::invalid_argument("");
  } catch (const std::exception&) {
    fail("{} '{}': expected a size in bytes such as 268435456 or 256M", flag, s);
  }
  std::string unit = s.substr(i);
  for (auto& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  double mul = 1;
  if (unit == "" || unit == "B") mul = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mul = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mul = 1048576.0;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mul = 1073741824.0;
  else fail("{} '{}': unknown unit '{}' (use K, M or G)", flag, s, s.substr(i));
  if (v * mul > 9.0e18) fail("{} '{}': too large", flag, s);
  return int64_t(v * mul);
}

ChatFormat chat_format(const Opts& o, const Model& model) {
  if (!o.chat_template.empty()) return chat_format_from_name(o.chat_template);
  if (const auto src = model.gguf().get_string_opt("tokenizer.chat_template")) {
    if (const auto d = detect_chat_format(*src)) return *d;
    fail("{}: tokenizer.chat_template is not a template aquakv recognizes; pass --chat-template NAME", model.path());
  }
  if (const auto a = chat_format_for_arch(model.config().arch)) return *a;
  fail("{}: the model has no tokenizer.chat_template; pass --chat-template chatml (or llama3, ...)", model.path());
}

std::string model_id(const Opts& o) {
  if (!o.alias.empty()) return o.alias;
  std::string id = o.model.substr(o.model.find_last_of('/') + 1);
  if (id.size() > 5 && id.substr(id.size() - 5) == ".gguf") id.resize(id.size() - 5);
  return id;
}

int run(const Opts& o) {
  if (o.port < 0 || o.port > 65535) fail("--port: expected 0..65535, got {}", o.port);
  if (o.n_ctx < 16) fail("-c: expected a context of at least 16 tokens, got {}", o.n_ctx);
  if (o.parallel < 1 || o.parallel > 256) fail("--parallel: expected 1..256, got {}", o.parallel);
  if (o.http_threads < 2 || o.http_threads > 1024) fail("--http-threads: expected 2..1024, got {}", o.http_threads);
  if (o.max_queue < 0) fail("--max-queue: expected >= 0, got {}", o.max_queue);
  if (o.max_tokens < 1) fail("--max-tokens: expected >= 1, got {}", o.max_tokens);
  if (o.max_body < 1024) fail("--max-body-bytes: expected >= 1024, got {}", o.max_body);
  if (!(o.timeout_s > 0)) fail("--timeout: expected seconds > 0, got {}", o.timeout_s);
  if (!(o.slot_idle_s >= 0)) fail("--slot-idle-s: expected seconds >= 0, got {}", o.slot_idle_s);
  if (o.threads < 0) fail("-t: expected a thread count >= 0, got {}", o.threads);
  if (o.probe < 2 || o.probe > o.n_ctx) fail("--kv-probe: expected 2..{} tokens (-c), got {}", o.n_ctx, o.probe);
  if (o.capacity < 0 || o.capacity > o.n_ctx) fail("--capacity: expected 1..{} tokens (-c), got {}", o.n_ctx, o.capacity);
  const int64_t budget = parse_bytes(o.budget, "--kv-budget");
  if ((!o.slot_kv.empty() || o.slot_zstd) && o.slot_dir.empty()) fail("--slot-kv and --slot-zstd need --slot-dir DIR");
  if (!o.slot_dir.empty()) {
    check_output_path(o.slot_dir + "/aquakv-slot-probe", "--slot-dir");
  }
  SamplerParams defaults{o.temp, o.top_k, o.top_p, o.min_p, 0};
  Sampler check(defaults);  // validates the sampling flags before the model loads
  std::string api_key = o.api_key;
  if (api_key.empty())
    if (const char* k = std::getenv("AQUAKV_API_KEY"); k != nullptr) api_key = k;

  const auto model = Model::load(o.model);
  const Tokenizer tok = Tokenizer::from_gguf(model->gguf());
  const ChatFormat cf = chat_format(o, *model);
  Forward fwd(*model, o.threads);
  SelfCalibration sc = o.self_calib;
  sc.threads = o.threads;
  const std::string spec = resolve_kv_spec(o.kv, *model, sc);

  const int64_t probe = o.capacity > 0 ? o.capacity : o.probe;
  const serve::KvEstimate est = serve::measure_kv_estimate(fwd, spec, o.n_ctx, probe);
  if (o.capacity > 0) {
    const double mib = double(est.probe_bytes) / 1048576.0;
    std::printf("format %s: one %lld-token conversation holds %.2f MiB of KV cache; budget %.1f MiB holds %lld\n",
                o.kv.c_str(), (long long)o.capacity, mib, double(budget) / 1048576.0,
                (long long)(est.probe_bytes > 0 && budget > 0 ? budget / est.probe_bytes : 0));
    return 0;
  }
  serve::SchedulerConfig sc_cfg;
  sc_cfg.kv_spec = spec;
  sc_cfg.kv_label = o.kv;
  sc_cfg.n_ctx = o.n_ctx;
  sc_cfg.kv_budget = budget;
  sc_cfg.max_running = o.parallel;
  sc_cfg.max_queue = o.max_queue;
  sc_cfg.time_limit_s = o.timeout_s;
  sc_cfg.slot_dir = o.slot_dir;
  sc_cfg.slot_idle_s = o.slot_idle_s;
  sc_cfg.slot_zstd = o.slot_zstd;
  if (!o.slot_kv.empty()) {
    sc_cfg.slot_spec = resolve_kv_spec(o.slot_kv, *model, sc);
    make_cache(sc_cfg.slot_spec, model->kv_shape(o.n_ctx));  // refuse a bad spec before serving
  }
  serve::Scheduler sched(fwd, tok, sc_cfg, est);

  serve::HttpOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.api_key = api_key;
  ho.max_body_bytes = o.max_body;
  ho.http_threads = o.http_threads;
  ho.model_id = model_id(o);
  ho.chat_format = cf;
  ho.limits.max_tokens = o.max_tokens;
  ho.limits.defaults = defaults;
  const std::unique_ptr<serve::HttpServer> server = serve::make_http_server(sched, tok, ho);
  serve::HttpServer& http = *server;
  const int port = http.bind();
  std::fprintf(stderr,
               "aquakv serve: model %s, kv %s (about %.1f KiB per token, %.2f MiB for a %lld-token conversation), "
               "budget %s, up to %d conversations decoding at once, chat format %s, threads %d\n",
               ho.model_id.c_str(), o.kv.c_str(), est.per_token / 1024.0, double(est.bytes(o.n_ctx)) / 1048576.0,
               (long long)o.n_ctx, budget > 0 ? fmt::format("{:.1f} MiB", double(budget) / 1048576.0).c_str() : "none",
               o.parallel, chat_format_name(cf), num_threads());
  std::fprintf(stderr, "aquakv serve: listening on http://%s:%d%s\n", o.host.c_str(), port,
               api_key.empty() ? "" : " (API key required)");
  std::fflush(stderr);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done && g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    http.stop();
  });
  http.run();
  done = true;
  watcher.join();
  std::fprintf(stderr, "aquakv serve: stopped%s\n", g_signal != 0 ? fmt::format(" (signal {})", g_signal.load()).c_str() : "");
  return 0;
}

const CommandRegistrar reg{"serve", "OpenAI-compatible HTTP server with continuous batching and a KV memory budget", [](CLI::App& sub) {
  auto o = std::make_shared<Opts>();
  o->model = default_model_path();
  sub.add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  sub.add_option("--host", o->host, "address to listen on (0.0.0.0: every interface)")->capture_default_str();
  sub.add_option("--port", o->port, "port (0: any free port, printed at startup)")->capture_default_str();
  sub.add_option("--api-key", o->api_key, "require Authorization: Bearer KEY (default: $AQUAKV_API_KEY, else none)");
  sub.add_option("--kv", o->kv, "KV cache format (fp16, q8_0, q4_0, higgs2, aquakv, ...)")->capture_default_str();
  sub.add_option("-c,--ctx-size", o->n_ctx, "context of each conversation in tokens")->capture_default_str();
  sub.add_option("--kv-budget", o->budget, "KV memory for all conversations, e.g. 256M (0: no budget)")->capture_default_str();
  sub.add_option("--parallel", o->parallel, "conversations decoding at once (the batch)")->capture_default_str();
  sub.add_option("--max-queue", o->max_queue, "requests waiting before the server answers 503")->capture_default_str();
  sub.add_option("--max-tokens", o->max_tokens, "largest max_tokens of a request (and its default)")->capture_default_str();
  sub.add_option("--max-body-bytes", o->max_body, "largest request body")->capture_default_str();
  sub.add_option("--timeout", o->timeout_s, "seconds a request may take, queueing included")->capture_default_str();
  sub.add_option("--slot-dir", o->slot_dir, "directory for idle conversations' session files (default: idle ones are dropped)");
  sub.add_option("--slot-kv", o->slot_kv, "format of the slot files (default: the --kv format), e.g. aquakv with --kv fp16");
  sub.add_flag("--slot-zstd", o->slot_zstd, "zstd-compress slot file sections where it saves >= 3%");
  sub.add_option("--slot-idle-s", o->slot_idle_s, "seconds before an idle conversation moves to --slot-dir")->capture_default_str();
  sub.add_option("--chat-template", o->chat_template, "chat format instead of the model's (chatml, llama3, ...)");
  sub.add_option("--alias", o->alias, "model name in /v1/models (default: the file name)");
  sub.add_option("-t,--threads", o->threads, "threads (default: all cores)");
  sub.add_option("--http-threads", o->http_threads, "connections served at once")->capture_default_str();
  sub.add_option("--temp", o->temp, "default temperature (requests override it)")->capture_default_str();
  sub.add_option("--top-k", o->top_k, "default top-k")->capture_default_str();
  sub.add_option("--top-p", o->top_p, "default top-p")->capture_default_str();
  sub.add_option("--min-p", o->min_p, "default min-p")->capture_default_str();
  sub.add_option("--kv-probe", o->probe, "tokens of the startup probe that measures KV bytes per token")->capture_default_str();
  sub.add_option("--capacity", o->capacity, "print how many conversations of N tokens fit --kv-budget (measured) and exit");
  add_self_adapter_flags(sub, o->self_calib);
  return RunFn([o] { return run(*o); });
}};

}  // namespace
}  // namespace aquakv::cli
