// `aquakv bench`: prompt-processing and generation speed in the style of llama.cpp's
// llama-bench. For each depth d: "pp<P> @ d<d>" times one forward pass over P prompt tokens
// after d tokens are already in the cache (filled untimed); "tg<N> @ d<d>" times N single-token
// steps after d tokens. Tokens are drawn at random from the vocabulary (fixed seed). Each test
// runs -r times; the table gives tokens/s as median +- standard deviation. With more than one
// thread, a line starting with '#' after each row gives the thread pool's synchronization cost
// over that test's timed runs: parallel regions per token, the time the calling thread spent
// waiting for the workers, and the regions run on the caller alone because other processes kept
// the cores busy (util/parallel.h, PoolStats). For formats that code rows (KvCache::
// encode_nanoseconds), a second '#' line gives the wall time spent coding them within the test:
// measured inside the one process, it is the encode share of prefill even on a loaded machine.
// bench/llama_cpp_bench.py measures llama.cpp the same way and prints the same table.
// Several --kv formats run in one invocation; decode rows then carry the ratio to fp16 at the
// same depth (same run), and a cost table gives each decode row's bytes and flops per token,
// this machine's measured read bandwidth and sgemm rate, and the fraction of that floor reached.
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
#include "machine_probe.h"

namespace aquakv::cli {
namespace {

struct Opts {
  std::string model, depths = "0,512,2048";
  std::vector<std::string> kvs{"fp16"};
  int64_t n_prompt = 512, n_gen = 128;
  int reps = 3, threads = 0;
  bool cost = true;
};

// "max" is the model's context minus the tokens a test adds.
std::vector<int64_t> parse_depths(const std::string& s, int64_t max_depth) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "max") {
      out.push_back(max_depth);
      continue;
    }
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 0) fail("-d: expected comma-separated depths >= 0 or 'max', got '{}'", s);
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

// Per-token cost of a decode step at depth d (see the file comment).
struct Cost {
  double kv_bytes, weight_bytes, flops;
};

Cost decode_cost(const Model& m, const KvCache& cache, int64_t d) {
  const ModelConfig& c = m.config();
  const double D = double(c.d_model), Q = double(c.q_width()), C = double(c.kv_width());
  const double weight_macs = double(c.n_layers) * (D * Q + 2 * D * C + Q * D + 3 * D * double(c.n_ff)) + double(c.n_vocab) * D;
  const double attn_flops = 4.0 * double(d) * Q * double(c.n_layers);
  // Predictors (AQUA-KV): every cached token is rebuilt through each layer's maps each step:
  // about one multiply-add per parameter per token.
  const double rebuild_flops = 2.0 * double(cache.fixed_bytes()) / 4.0 * double(d);
  return {double(cache.live_bytes() + cache.fixed_bytes()), double(m.weight_bytes()),
          2.0 * weight_macs + attn_flops + rebuild_flops};
}

// The '#' line after a row with more than one thread (see the file comment).
void print_sync(const std::string& test, const PoolStats& sync, double toks, double secs) {
  std::printf("# sync %s: %.1f regions/token, %.1f us waited/token (%.1f%% of the time), "
              "%.1f%% of regions slept, %.1f regions/token run inline (cores busy)\n",
              test.c_str(), double(sync.regions) / toks, double(sync.wait_ns) * 1e-3 / toks,
              100.0 * double(sync.wait_ns) * 1e-9 / secs,
              sync.regions ? 100.0 * double(sync.sleeps) / double(sync.regions) : 0.0,
              double(sync.inline_regions) / toks);
  std::fflush(stdout);
}

struct DecodeRow {
  std::string kv;
  int64_t depth;
  double tps;
  Cost cost;
};

int run(const Opts& o) {
  if (o.n_prompt < 0 || o.n_gen < 0) fail("-p/-n: expected token counts >= 0");
  if (o.reps < 1) fail("-r: expected repetitions >= 1, got {}", o.reps);
  if (o.threads < 0) fail("-t: expected a thread count >= 0, got {}", o.threads);
  if (o.kvs.empty()) fail("--kv: expected at least one cache format");
  const auto model = Model::load(o.model);
  const ModelConfig& cfg = model->config();
  const int64_t step = std::max(o.n_prompt, o.n_gen) + 1;
  const int64_t model_ctx = cfg.n_ctx_train > 0 ? cfg.n_ctx_train : 8192;
  const std::vector<int64_t> depths = parse_depths(o.depths, std::max<int64_t>(0, model_ctx - step));
  const int64_t max_depth = *std::max_element(depths.begin(), depths.end());
  const int64_t max_n = step - 1;
  // Each test fills the cache to depth + tokens: beyond the model's context the positions are
  // ones it was never trained on (and a typo such as -d 99999999 would run for days). Compared
  // one by one first so that the sum cannot overflow.
  if (max_depth > model_ctx || max_n > model_ctx || max_depth + max_n > model_ctx)
    fail("-d/-p/-n: the deepest test needs depth {} + {} tokens, more than the model's context of {}",
         max_depth, max_n, model_ctx);
  Forward fwd(*model, o.threads);
  for (const auto& kv : o.kvs) make_cache(kv, model->kv_shape(1));  // bad specs fail before any work
  const int64_t ctx = max_depth + step;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(cfg.n_vocab - 1));
  // tg starts from fill[d], so the fill has at least max_depth + 1 tokens even with -p 0.
  std::vector<int32_t> fill(static_cast<size_t>(max_depth + std::max<int64_t>(o.n_prompt, 1)));
  for (auto& t : fill) t = tok(rng);
  std::vector<float> logits(static_cast<size_t>(cfg.n_vocab));
  using clock = std::chrono::steady_clock;

  const std::string name = cfg.name.empty() ? model->path() : cfg.name;
  std::vector<DecodeRow> decode_rows;
  std::printf("| model | size | threads | kv | test | t/s | vs fp16 |\n|---|---:|---:|---|---|---:|---:|\n");
  auto row = [&](const std::string& kv, const std::string& test, const std::vector<double>& tps, double ratio) {
    const Stat s = stats(tps);
    std::printf("| %s | %.2f MiB | %d | %s | %s | %.2f ± %.2f | %s |\n", name.c_str(),
                double(model->weight_bytes()) / (1024.0 * 1024.0), num_threads(), kv.c_str(),
                test.c_str(), s.median, s.stddev, ratio > 0 ? fmt::format("{:.2f}x", ratio).c_str() : "");
    std::fflush(stdout);
  };
  // fp16 first at each depth, so the others' decode rows can show their ratio to it.
  std::vector<std::string> kvs = o.kvs;
  std::stable_partition(kvs.begin(), kvs.end(), [](const std::string& k) { return k == "fp16" || k == "f16"; });
  for (const int64_t d : depths) {
    for (const auto& kv : kvs) {
      for (const bool pp : {true, false}) {
        const int64_t n = pp ? o.n_prompt : o.n_gen;
        if (n == 0) continue;
        std::vector<double> tps;
        Cost cost{};
        PoolStats sync{};
        double secs = 0, encode_secs = 0;
        for (int r = 0; r < o.reps; ++r) {
          auto cache = make_cache(kv, model->kv_shape(ctx));
          const int seq = cache->add_sequence();
          if (d > 0) fwd.eval(*cache, seq, std::span<const int32_t>(fill.data(), size_t(d)), nullptr, false);
          cost = decode_cost(*model, *cache, d);
          const PoolStats s0 = pool_stats();
          const int64_t e0 = cache->encode_nanoseconds();
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
          encode_secs += double(cache->encode_nanoseconds() - e0) * 1e-9;
          const PoolStats s1 = pool_stats();
          sync.regions += s1.regions - s0.regions;
          sync.wait_ns += s1.wait_ns - s0.wait_ns;
          sync.sleeps += s1.sleeps - s0.sleeps;
          sync.inline_regions += s1.inline_regions - s0.inline_regions;
          secs += dt;
          tps.push_back(double(n) / dt);
        }
        double ratio = 0;
        if (!pp) {
          decode_rows.push_back({kv, d, stats(tps).median, cost});
          for (const auto& r : decode_rows)
            if (r.depth == d && (r.kv == "fp16" || r.kv == "f16") && o.kvs.size() > 1) ratio = stats(tps).median / r.tps;
        }
        const std::string test = (pp ? "pp" : "tg") + std::to_string(n) + " @ d" + std::to_string(d);
        row(kv, test, tps, ratio);
        if (num_threads() > 1) print_sync(test, sync, double(n) * o.reps, secs);
        if (encode_secs > 0) {
          std::printf("# encode %s: %.1f ms of %.1f ms (%.1f%% of the time coding rows into the format)\n",
                      test.c_str(), 1e3 * encode_secs / o.reps, 1e3 * secs / o.reps, 100.0 * encode_secs / secs);
        }
      }
    }
  }
  if (!o.cost || decode_rows.empty()) return 0;
  const double bw = measure_read_bandwidth(), gemm = measure_sgemm_rate();
  std::printf("\nDecode cost per token (floor = max(bytes / %.1f GB/s read bandwidth, flops / %.1f GFLOP/s sgemm), both measured now on %d threads):\n\n",
              bw / 1e9, gemm / 1e9, num_threads());
  std::printf("| kv | depth | KV+predictor MiB read | weight MiB read | GFLOP | floor ms | measured ms | of floor |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : decode_rows) {
    const double floor_s = std::max((r.cost.kv_bytes + r.cost.weight_bytes) / bw, r.cost.flops / gemm);
    const double ms = 1000.0 / r.tps;
    std::printf("| %s | %ld | %.2f | %.2f | %.3f | %.2f | %.2f | %.0f%% |\n", r.kv.c_str(), long(r.depth),
                r.cost.kv_bytes / 1048576.0, r.cost.weight_bytes / 1048576.0, r.cost.flops / 1e9,
                1000.0 * floor_s, ms, 100.0 * 1000.0 * floor_s / ms);
  }
  return 0;
}

const CommandRegistrar reg{"bench", "prefill/decode speed at several context depths (llama-bench style)", [](CLI::App& sub) {
  auto o = std::make_shared<Opts>();
  o->model = default_model_path();
  sub.add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  sub.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens per pp test")->capture_default_str();
  sub.add_option("-n,--n-gen", o->n_gen, "generated tokens per tg test")->capture_default_str();
  sub.add_option("-d,--depths", o->depths, "comma-separated context depths ('max': the model's context)")->capture_default_str();
  sub.add_option("-r,--repetitions", o->reps, "runs per test")->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "threads (default: all cores)");
  sub.add_option("--kv", o->kvs, "KV cache format; repeat for several (decode rows then show the ratio to fp16)")->capture_default_str();
  sub.add_flag("!--no-cost", o->cost, "skip the decode cost table (bandwidth and sgemm probes)");
  return RunFn([o] { return run(*o); });
}};

}  // namespace
}  // namespace aquakv::cli
