// Cost of one decode step (1 new token, all 30 layers: append + read, then end_step) of the
// compressed caches on the default model's KV shape (30 layers, C = 192) at several cached
// lengths, against the plain fp16 cache; kind 0 fp16, 1 higgs2, 2 AQUA-KV (full-rank predictors),
// 3 AQUA-KV with rank-64 predictors. The AQUA-KV read rebuilds every compressed token from
// codes (decode + predictor GEMMs), so its cost grows with the context.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/quant/codec.h"

namespace aquakv {
namespace {

constexpr int kL = 30, kH = 3, kHd = 64, kC = kH * kHd;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 8192;
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

std::unique_ptr<KvCache> make(int kind) {
  if (kind == 0) return make_cache("fp16", shape());
  if (kind == 1) return make_cache("higgs2", shape());
  CompressedCacheOptions o;
  o.name = kind == 2 ? "aquakv" : "aquakv rank 64";
  o.key_codec = o.value_codec = std::shared_ptr<const Codec>(make_codec("higgs2", kC));
  o.layer0_key_codec = o.layer0_value_codec = std::shared_ptr<const Codec>(make_codec("higgs4", kC));
  o.adapters = random_adapters(kind == 2 ? 0 : 64);
  return make_compressed_cache(shape(), o);
}

void BM_DecodeStep(benchmark::State& st) {
  const int kind = int(st.range(0));
  const int64_t ctx = st.range(1);
  auto cache = make(kind);
  const int seq = cache->add_sequence();
  std::mt19937 rng(2);
  std::normal_distribution<float> g;
  std::vector<float> kv(size_t(32 * kC));
  for (auto& e : kv) e = g(rng);
  for (int64_t t = 0; t < ctx; t += 32) {  // prefill in steps of 32
    cache->begin_step(seq, 32);
    for (int l = 0; l < kL; ++l) { cache->append(l, kv.data(), kv.data()); cache->read(l); }
    cache->end_step();
  }
  for (auto _ : st) {
    // One decode step; clear the extra token afterwards is not possible, so steps accumulate
    // (a few hundred iterations at most change the length by < 10%).
    cache->begin_step(seq, 1);
    for (int l = 0; l < kL; ++l) {
      cache->append(l, kv.data(), kv.data());
      benchmark::DoNotOptimize(cache->read(l).k);
    }
    cache->end_step();
  }
  st.counters["live_MiB"] = double(cache->live_bytes()) / (1 << 20);
  st.SetLabel(cache->name());
}

BENCHMARK(BM_DecodeStep)
    ->ArgsProduct({{0, 1, 2, 3}, {512, 2048, 4096}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20);

}  // namespace
}  // namespace aquakv

BENCHMARK_MAIN();
