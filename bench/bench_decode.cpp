// Decode dot kernels per SIMD level: y = x W^T for one activation row (the dot path of
// ops/matmul.h, single-threaded) on Q4_1, Q4_0 and Q8_0 weights of the default model's shapes.
// Arg 0: one 1536 x 576 matrix (~0.5 MiB: stays in L2, measures the kernel's arithmetic);
// Arg 1: 49152 x 576 (the tied output matrix: 28 MiB Q8_0, read from memory each call).
// bytes = weight bytes read per call, so bytes_per_second compares with Stream/read of
// bench_quant (docs/RESULTS.md, cost model).
//   build/bench_decode --benchmark_min_time=0.3s
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

void BM_DecodeMatmul(benchmark::State& st, GgmlType type, SimdLevel level) {
  if (cpu_simd_level() < level) {
    st.SkipWithError("level not supported by this CPU");
    return;
  }
  set_num_threads(1);
  const int64_t cols = 576, rows = st.range(0) == 0 ? 1536 : 49152;
  const int64_t rb = ggml_row_bytes(type, cols);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> src(static_cast<size_t>(cols));
  std::vector<uint8_t> data(static_cast<size_t>(rows * rb));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : src) v = nd(rng);
    quantize_row_ref(type, src.data(), data.data() + r * rb, cols);
  }
  const QMatrix w{type, rows, cols, rb, data.data()};
  std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
  for (auto& v : x) v = nd(rng);
  set_simd_level(level);
  for (auto _ : st) {
    matmul(w, x.data(), 1, y.data(), MatmulPath::kDot);
    benchmark::DoNotOptimize(y.data());
  }
  set_simd_level(cpu_simd_level());
  st.SetBytesProcessed(st.iterations() * rows * rb);
}

void register_all() {
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0}) {
    for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
      const std::string name = "DecodeMatmul/" + std::string(ggml_type_name(t)) + "/" + simd_level_name(l);
      benchmark::RegisterBenchmark(name.c_str(), BM_DecodeMatmul, t, l)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace aquakv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  aquakv::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
