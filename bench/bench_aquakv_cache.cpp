// Cost of one decode step's attention (1 new token, all 30 layers: append + attend with the
// model's 9 query heads, then end_step) of every cache format on the default model's KV shape
// (30 layers, 3 KV heads of 64, RoPE on all channels) at several cached lengths: the part of a
// decode step that the cache format owns, without the weights. Kinds: 0 fp16, 1 q8_0, 2 q4_0,
// 3 kivi2, 4 higgs2, 5 AQUA-KV (random full-rank predictors), 6 AQUA-KV rank 64, 7 kivi4,
// 8 higgs3, 9 higgs4, 10 AQUA-KV rank 16, 11 AQUA-KV rank 128, 12-14 HIGGS 2/3/4-bit in one
// 192-wide group per row (kinds 4, 8, 9 are the registry formats, in per-head groups), 15 q8_0r,
// 16 q4_0r (blocks of Hadamard-turned heads). The
// AQUA-KV rebuild (decode + predictor GEMMs over every compressed token) grows with the context.
// Third argument: threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr int kL = 30, kH = 3, kHd = 64, kC = kH * kHd;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 8192 + 512;
  s.rope.n_rot = kHd;
  s.rope.freq_base = 100000.0;
  return s;
}

// Random predictors of full rank (rank 0) or reduced rank r: y = (x U) V + b.
std::shared_ptr<Adapters> random_adapters(int64_t rank) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0, 0.05f);
  auto a = std::make_shared<Adapters>();
  a->model = {"bench", kL, kH, kHd, kC, 0};
  a->layers.resize(kL);
  for (int l = 1; l < kL; ++l) {
    for (auto* m : {&a->layers[size_t(l)].key, &a->layers[size_t(l)].value}) {
      m->in = m == &a->layers[size_t(l)].key ? kC : 2 * kC;
      m->out = kC;
      m->rank = rank;
      if (rank == 0) {
        m->w.resize(size_t(m->in * kC));
      } else {
        m->u.resize(size_t(m->in * rank));
        m->v.resize(size_t(rank * kC));
      }
      m->bias.resize(kC);
      for (auto* t : {&m->w, &m->u, &m->v})
        for (auto& e : *t) e = g(rng);
    }
  }
  return a;
}

constexpr int kQueryHeads = 9;
// Decode steps per measurement (AQUAKV_BENCH_ITERS overrides, e.g. for profiling).
int iters_from_env() {
  const char* e = std::getenv("AQUAKV_BENCH_ITERS");
  const int n = e ? std::atoi(e) : 0;
  return n >= 1 ? n : 20;  // unset or not a positive count: 20
}
const int kIters = iters_from_env();

std::unique_ptr<KvCache> make(int kind) {
  static const char* plain[] = {"fp16", "q8_0", "q4_0", "kivi2", "higgs2", "", "", "kivi4", "higgs3", "higgs4", "", "", "higgs:2x16:g192", "higgs:2x64:g192", "higgs:2x256:g192", "q8_0r", "q4_0r"};
  if (kind < 5 || (kind > 6 && kind < 10) || kind >= 12) return make_cache(plain[kind], shape());
  const int64_t rank = kind == 5 ? 0 : kind == 6 ? 64 : kind == 10 ? 16 : 128;
  CompressedCacheOptions o;
  o.name = rank == 0 ? "aquakv" : "aquakv rank " + std::to_string(rank);
  o.key_codec = o.value_codec = std::shared_ptr<const Codec>(make_codec("higgs2", kC));
  o.layer0_key_codec = o.layer0_value_codec = std::shared_ptr<const Codec>(make_codec("higgs4", kC));
  o.adapters = random_adapters(rank);
  return make_compressed_cache(shape(), o);
}

void BM_DecodeStep(benchmark::State& st) {
  const int kind = int(st.range(0));
  const int64_t ctx = st.range(1);
  set_num_threads(int(st.range(2)));
  auto cache = make(kind);
  const int seq = cache->add_sequence();
  std::mt19937 rng(2);
  std::normal_distribution<float> g;
  std::vector<float> kv(size_t(512 * kC)), q(size_t(512 * kQueryHeads * kHd)), out(q.size());
  for (auto& e : kv) e = g(rng);
  for (auto& e : q) e = g(rng);
  auto step = [&](int64_t n) {
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      cache->append(l, kv.data(), kv.data());
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQueryHeads;
      a.scale = 0.125f;
      cache->attend(l, a);
    }
    cache->end_step();
  };
  for (int64_t t = 0; t < ctx; t += 512) step(std::min<int64_t>(512, ctx - t));  // prefill
  for (auto _ : st) {
    // One decode step; steps accumulate (20 iterations change the length by < 4%).
    step(1);
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["live_MiB"] = double(cache->live_bytes()) / (1 << 20);
  st.SetLabel(cache->name());
}

BENCHMARK(BM_DecodeStep)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {512, 2048, 4096, 8192}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(kIters);

}  // namespace
}  // namespace aquakv

BENCHMARK_MAIN();
