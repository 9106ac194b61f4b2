// Decode dot kernels per SIMD level: y = x W^T for n activation rows (the dot path of
// ops/matmul.h, single-threaded) on Q4_1, Q4_0 and Q8_0 weights of the default model's shapes.
// Args (size, packed, n): size 0 = one 1536 x 576 matrix (~0.5 MiB: stays in L2, measures the
// kernel's arithmetic), 1 = 49152 x 576 (the tied output matrix: 28 MiB Q8_0, read from memory
// each call); packed 1 = the rows repacked into 16-row groups (ops/qpack.h) as the model loader
// does, 0 = the GGUF row layout; n = activation rows (1: one sequence, 8: a batched step).
// bytes = weight bytes read per call, so bytes_per_second compares with Stream/read of
// bench_quant (docs/RESULTS.md, cost model).
//   build/bench_decode --benchmark_min_time=0.3s
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/ops/qpack.h"
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
  QMatrix w{type, rows, cols, rb, data.data()};
  std::vector<uint8_t> packed;
  if (st.range(1) == 1) {
    const int64_t gb = qpack_group_bytes(type, cols);
    packed.resize(static_cast<size_t>(rows / kPackRows * gb));
    for (int64_t g = 0; g < rows / kPackRows; ++g) {
      qpack_group(type, data.data() + g * kPackRows * rb, rb, cols, packed.data() + g * gb);
    }
    w.packed = packed.data();
  }
  const int64_t n = st.range(2);
  std::vector<float> x(static_cast<size_t>(n * cols)), y(static_cast<size_t>(n * rows));
  for (auto& v : x) v = nd(rng);
  set_simd_level(level);
  for (auto _ : st) {
    matmul(w, x.data(), n, y.data(), MatmulPath::kDot);
    benchmark::DoNotOptimize(y.data());
  }
  set_simd_level(cpu_simd_level());
  st.SetBytesProcessed(st.iterations() * rows * rb);
}

void register_all() {
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0}) {
    for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
      const std::string name = "DecodeMatmul/" + std::string(ggml_type_name(t)) + "/" + simd_level_name(l);
      benchmark::RegisterBenchmark(name.c_str(), BM_DecodeMatmul, t, l)
          ->ArgNames({"size", "packed", "n"})
          ->Args({0, 0, 1})->Args({0, 1, 1})->Args({1, 0, 1})->Args({1, 1, 1})
          ->Args({1, 0, 8})->Args({1, 1, 8})
          ->Unit(benchmark::kMicrosecond);
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
