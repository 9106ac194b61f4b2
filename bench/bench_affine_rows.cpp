// Throughput of ops/affine_rows (the AQUA-KV rebuild GEMM) against OpenBLAS sgemm on the default
// model's predictor shapes: rows = cached tokens, K = C or 2C, N = C = 192.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>
#include <vector>

#include "aquakv/ops/affine_rows.h"
#include "aquakv/util/parallel.h"

namespace {

struct Data {
  std::vector<float> x, w, b, y;
  Data(int64_t n, int64_t k, int64_t out) : x(size_t(n * k)), w(size_t(k * out)), b(size_t(out)), y(size_t(n * out)) {
    std::mt19937 rng(1);
    std::normal_distribution<float> g;
    for (auto* v : {&x, &w, &b})
      for (auto& e : *v) e = g(rng);
  }
};

void BM_AffineRows(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1), out = 192;
  aquakv::set_num_threads(int(st.range(2)));
  Data d(n, k, out);
  const aquakv::AffineInput in{d.x.data(), k, k};
  for (auto _ : st) {
    aquakv::affine_rows(n, &in, 1, d.w.data(), out, d.b.data(), d.y.data(), out);
    benchmark::DoNotOptimize(d.y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(2 * n * k * out) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_Sgemm(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1), out = 192;
  aquakv::set_num_threads(int(st.range(2)));
  Data d(n, k, out);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(out), int(k), 1.f, d.x.data(), int(k),
                d.w.data(), int(out), 0.f, d.y.data(), int(out));
    benchmark::DoNotOptimize(d.y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(2 * n * k * out) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

BENCHMARK(BM_AffineRows)->Args({2048, 192, 1})->Args({2048, 384, 1})->Args({2048, 384, 2})->Args({156, 384, 1})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Sgemm)->Args({2048, 192, 1})->Args({2048, 384, 1})->Args({2048, 384, 2})->Args({156, 384, 1})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
