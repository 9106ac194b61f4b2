// Decode steps of B conversations at once (Forward::eval_batch, what `aquakv serve` runs per
// step) against B = 1: tokens/s of the engine alone, without HTTP or sampling. Each of the B
// caches holds a 64-token prompt first. Needs AQUAKV_MODEL; KV format from AQUAKV_BENCH_KV
// (default fp16). Run: build/bench_serve_batch --benchmark_min_time=3
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/kv/cache_factory.h"

namespace {

const aquakv::Model* model() {
  static std::unique_ptr<aquakv::Model> m = [] {
    const char* p = std::getenv("AQUAKV_MODEL");
    return p != nullptr ? aquakv::Model::load(p) : nullptr;
  }();
  return m.get();
}

void BM_EvalBatch(benchmark::State& st) {
  if (model() == nullptr) {
    st.SkipWithError("AQUAKV_MODEL not set");
    return;
  }
  const int B = int(st.range(0));
  const char* kv = std::getenv("AQUAKV_BENCH_KV");
  aquakv::Forward fwd(*model(), 0);
  std::vector<std::unique_ptr<aquakv::KvCache>> caches;
  std::vector<aquakv::KvCache*> ptrs;
  std::vector<int> seqs;
  std::vector<int32_t> prompt(64);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(300 + 7 * i);
  for (int b = 0; b < B; ++b) {
    caches.push_back(aquakv::make_cache(kv != nullptr ? kv : "fp16", model()->kv_shape(4096)));
    seqs.push_back(caches.back()->add_sequence());
    ptrs.push_back(caches.back().get());
    fwd.eval(*caches.back(), seqs.back(), prompt, nullptr, false);
  }
  std::vector<float> logits(size_t(B) * size_t(model()->config().n_vocab));
  std::vector<int32_t> toks(size_t(B), 1000);
  for (auto _ : st) {
    fwd.eval_batch(ptrs, seqs, toks, logits.data());
    for (int b = 0; b < B; ++b) toks[size_t(b)] = int32_t(1000 + (toks[size_t(b)] + 13 * b) % 5000);
  }
  st.counters["tok/s"] = benchmark::Counter(double(st.iterations()) * B, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EvalBatch)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
