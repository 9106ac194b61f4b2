// Row dequantization throughput per ggml type: scalar reference vs the dispatched (AVX2) path;
// and a prefill GEMM tile of packed groups (ops/qpack.h, 8 groups of 16 rows x 2048 values, row
// stride 2048 or 2064 floats: matmul pads such rows) decoded straight from the packed bytes
// (qpack_dequant_group, and its scalar reference) against the path it replaced (unpack each
// group to GGUF rows, then dequantize_row).
// Items are values decoded; bytes are block bytes read.
//   build/bench_dequant --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/qpack.h"
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

constexpr int64_t kTileGroups = 8;

enum class Tile { kUnpackThenRows, kDirect, kDirectRef };

void run_tile(benchmark::State& state, GgmlType t, Tile how) {
  const int64_t kTileCols = state.range(0), ld = kTileCols + state.range(1);  // row stride of the tile
  const int64_t rb = ggml_row_bytes(t, kTileCols), gb = qpack_group_bytes(t, kTileCols);
  std::vector<uint8_t> rows(size_t(kPackRows * kTileGroups * rb)), packed(size_t(kTileGroups * gb));
  std::mt19937 rng(2);
  for (auto& x : rows) x = uint8_t(rng() & 0x3b);  // keeps fp16 fields finite and small
  for (int64_t g = 0; g < kTileGroups; ++g) {
    qpack_group(t, rows.data() + g * kPackRows * rb, rb, kTileCols, packed.data() + g * gb);
  }
  std::vector<float> dst(size_t(kPackRows * kTileGroups * ld));
  std::vector<uint8_t> unpacked(size_t(kPackRows * rb));
  set_simd_level(cpu_simd_level());
  for (auto _ : state) {
    for (int64_t g = 0; g < kTileGroups; ++g) {
      float* out = dst.data() + g * kPackRows * ld;
      const uint8_t* grp = packed.data() + g * gb;
      if (how == Tile::kUnpackThenRows) {
        qunpack_group(t, grp, kTileCols, unpacked.data(), rb);
        for (int64_t r = 0; r < kPackRows; ++r) dequantize_row(t, unpacked.data() + r * rb, out + r * ld, kTileCols);
      } else if (how == Tile::kDirect) {
        qpack_dequant_group(t, grp, kTileCols, out, ld);
      } else {
        qpack_dequant_group_ref(t, grp, kTileCols, out, ld);
      }
    }
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetItemsProcessed(state.iterations() * kPackRows * kTileGroups * kTileCols);
  state.SetBytesProcessed(state.iterations() * int64_t(packed.size()));
}

#define AQUAKV_TILE_BENCH(T)                                                                      \
  void BM_tile_unpack_then_rows_##T(benchmark::State& s) { run_tile(s, GgmlType::T, Tile::kUnpackThenRows); } \
  void BM_tile_direct_##T(benchmark::State& s) { run_tile(s, GgmlType::T, Tile::kDirect); }      \
  void BM_tile_direct_ref_##T(benchmark::State& s) { run_tile(s, GgmlType::T, Tile::kDirectRef); } \
  BENCHMARK(BM_tile_unpack_then_rows_##T)->Args({2048, 0})->Args({2048, 16});                     \
  BENCHMARK(BM_tile_direct_##T)->Args({2048, 0})->Args({2048, 16});                               \
  BENCHMARK(BM_tile_direct_ref_##T)->Args({2048, 16});

AQUAKV_TILE_BENCH(Q4_0)
AQUAKV_TILE_BENCH(Q4_1)
AQUAKV_TILE_BENCH(Q5_0)
AQUAKV_TILE_BENCH(Q5_1)
AQUAKV_TILE_BENCH(Q8_0)
AQUAKV_TILE_BENCH(Q4_K)
AQUAKV_TILE_BENCH(Q5_K)
AQUAKV_TILE_BENCH(Q6_K)

}  // namespace
}  // namespace aquakv

BENCHMARK_MAIN();
