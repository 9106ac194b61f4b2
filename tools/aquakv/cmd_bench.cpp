// `aquakv bench`: prompt-processing and generation speed in the style of llama.cpp's
// llama-bench. For each depth d: "pp<P> @ d<d>" times one forward pass over P prompt tokens
// after d tokens are already in the cache (filled untimed); "tg<N> @ d<d>" times N single-token
// steps after d tokens. Tokens are drawn at random from the vocabulary (fixed seed). Each test
// runs -r times; the table gives tokens/s as median +- standard deviation. With more than one
// thread, a line starting with '#' after each row gives the thread pool's synchronization cost
// over that test's timed runs: parallel regions per token, the time the calling thread spent
// waiting for the workers, and the regions run on the caller alone because other processes kept
// the cores busy (util/parallel.h, PoolStats).
// bench/llama_cpp_bench.py measures llama.cpp the same way and prints the same table.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/parallel.h"
#include "command.h"

namespace aquakv::cli {
namespace {

struct Opts {
  std::string model, depths = "0,512,2048", kv = "fp16";
  int64_t n_prompt = 512, n_gen = 128;
  int reps = 3, threads = 0;
};

std::vector<int64_t> parse_depths(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 0) fail("-d: expected comma-separated depths >= 0, got '{}'", s);
    out.push_back(v);
  }
  if (out.empty()) fail("-d: expected at least one depth");
  return out;
}

struct Stat {
  double median, stddev;
};

Stat stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  double mean = 0, ss = 0;
  for (double x : v) mean += x / double(n);
  for (double x : v) ss += (x - mean) * (x - mean);
  return {med, n > 1 ? std::sqrt(ss / double(n - 1)) : 0.0};
}

int run(const Opts& o) {
  if (o.n_prompt < 0 || o.n_gen < 0) fail("-p/-n: expected token counts >= 0");
  if (o.reps < 1) fail("-r: expected repetitions >= 1, got {}", o.reps);
  if (o.threads < 0) fail("-t: expected a thread count >= 0, got {}", o.threads);
  const std::vector<int64_t> depths = parse_depths(o.depths);
  const auto model = Model::load(o.model);
  const ModelConfig& cfg = model->config();
  Forward fwd(*model, o.threads);
  const int64_t max_depth = *std::max_element(depths.begin(), depths.end());
  const int64_t ctx = max_depth + std::max(o.n_prompt, o.n_gen) + 1;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(cfg.n_vocab - 1));
  // tg starts from fill[d], so the fill has at least max_depth + 1 tokens even with -p 0.
  std::vector<int32_t> fill(static_cast<size_t>(max_depth + std::max<int64_t>(o.n_prompt, 1)));
  for (auto& t : fill) t = tok(rng);
  std::vector<float> logits(static_cast<size_t>(cfg.n_vocab));
  using clock = std::chrono::steady_clock;

  const std::string name = cfg.name.empty() ? model->path() : cfg.name;
  std::printf("| model | size | threads | kv | test | t/s |\n|---|---:|---:|---|---|---:|\n");
  auto row = [&](const std::string& test, const std::vector<double>& tps) {
    const Stat s = stats(tps);
    std::printf("| %s | %.2f MiB | %d | %s | %s | %.2f ± %.2f |\n", name.c_str(),
                double(model->weight_bytes()) / (1024.0 * 1024.0), num_threads(), o.kv.c_str(),
                test.c_str(), s.median, s.stddev);
    std::fflush(stdout);
  };
  for (const int64_t d : depths) {
    for (const bool pp : {true, false}) {
      const int64_t n = pp ? o.n_prompt : o.n_gen;
      if (n == 0) continue;
      std::vector<double> tps;
      PoolStats sync{};
      double secs = 0;
      for (int r = 0; r < o.reps; ++r) {
        auto cache = make_cache(o.kv, model->kv_shape(ctx));
        const int seq = cache->add_sequence();
        if (d > 0) fwd.eval(*cache, seq, std::span<const int32_t>(fill.data(), size_t(d)), nullptr, false);
        const PoolStats s0 = pool_stats();
        const auto t0 = clock::now();
        if (pp) {
          fwd.eval(*cache, seq, std::span<const int32_t>(fill.data() + d, size_t(n)), logits.data(), false);
        } else {
          int32_t next = fill[size_t(d)];
          for (int64_t i = 0; i < n; ++i) {
            fwd.eval(*cache, seq, std::span<const int32_t>(&next, 1), logits.data(), false);
            next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
          }
        }
        const double dt = std::chrono::duration<double>(clock::now() - t0).count();
        const PoolStats s1 = pool_stats();
        sync.regions += s1.regions - s0.regions;
        sync.wait_ns += s1.wait_ns - s0.wait_ns;
        sync.sleeps += s1.sleeps - s0.sleeps;
        sync.inline_regions += s1.inline_regions - s0.inline_regions;
        secs += dt;
        tps.push_back(double(n) / dt);
      }
      const std::string test = (pp ? "pp" : "tg") + std::to_string(n) + " @ d" + std::to_string(d);
      row(test, tps);
      if (num_threads() > 1) {
        const double toks = double(n) * o.reps;
        std::printf("# sync %s: %.1f regions/token, %.1f us waited/token (%.1f%% of the time), "
                    "%.1f%% of regions slept, %.1f regions/token run inline (cores busy)\n",
                    test.c_str(), double(sync.regions) / toks, double(sync.wait_ns) * 1e-3 / toks,
                    100.0 * double(sync.wait_ns) * 1e-9 / secs,
                    sync.regions ? 100.0 * double(sync.sleeps) / double(sync.regions) : 0.0,
                    double(sync.inline_regions) / toks);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

const CommandRegistrar reg{"bench", "prefill/decode speed at several context depths (llama-bench style)", [](CLI::App& sub) {
  auto o = std::make_shared<Opts>();
  o->model = default_model_path();
  sub.add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  sub.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens per pp test")->capture_default_str();
  sub.add_option("-n,--n-gen", o->n_gen, "generated tokens per tg test")->capture_default_str();
  sub.add_option("-d,--depths", o->depths, "comma-separated context depths")->capture_default_str();
  sub.add_option("-r,--repetitions", o->reps, "runs per test")->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "threads (default: all cores)");
  sub.add_option("--kv", o->kv, "KV cache format")->capture_default_str();
  return RunFn([o] { return run(*o); });
}};

}  // namespace
}  // namespace aquakv::cli
