// Row dequantization throughput per ggml type: scalar reference vs the dispatched (AVX2) path.
// Items are values decoded; bytes are block bytes read.
//   build/bench_dequant --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/cpu.h"

namespace aquakv {
namespace {

constexpr int64_t kN = 4096;

std::vector<uint8_t> random_row(GgmlType t) {
  std::vector<uint8_t> b(size_t(ggml_row_bytes(t, kN)));
  std::mt19937 rng(1);
  for (auto& x : b) x = uint8_t(rng() & 0x3b);  // keeps fp16 fields finite and small
  return b;
}

void run(benchmark::State& state, GgmlType t, bool reference) {
  const auto src = random_row(t);
  std::vector<float> dst(kN);
  set_simd_level(cpu_simd_level());
  for (auto _ : state) {
    if (reference) {
      dequantize_row_ref(t, src.data(), dst.data(), kN);
    } else {
      dequantize_row(t, src.data(), dst.data(), kN);
    }
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetItemsProcessed(state.iterations() * kN);
  state.SetBytesProcessed(state.iterations() * int64_t(src.size()));
}

#define AQUAKV_DEQUANT_BENCH(T)                                                         \
  void BM_ref_##T(benchmark::State& s) { run(s, GgmlType::T, true); }                   \
  void BM_dispatch_##T(benchmark::State& s) { run(s, GgmlType::T, false); }             \
  BENCHMARK(BM_ref_##T);                                                                \
  BENCHMARK(BM_dispatch_##T);

AQUAKV_DEQUANT_BENCH(F16)
AQUAKV_DEQUANT_BENCH(Q8_0)
AQUAKV_DEQUANT_BENCH(Q4_0)
AQUAKV_DEQUANT_BENCH(Q4_1)
AQUAKV_DEQUANT_BENCH(Q4_K)
AQUAKV_DEQUANT_BENCH(Q6_K)
AQUAKV_DEQUANT_BENCH(Q5_0)

}  // namespace
}  // namespace aquakv

BENCHMARK_MAIN();
