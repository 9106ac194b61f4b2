// AVX-512 kernel of affine_rows: 12-row x 32-column register tiles (24 zmm accumulators), each
// accumulator updated with one FMA per k in increasing k order -- the scalar reference's order,
// so results are bit-identical to it and to the AVX2 kernel. Twice the columns per FMA of the
// AVX2 tiles and twice the rows per weight load: the AQUA-KV rebuild's GEMM on AVX-512 CPUs.
#include <immintrin.h>

#include <cmath>

#include "aquakv/ops/affine_rows.h"

namespace aquakv::detail {
namespace {

constexpr int64_t kRowTile = 96;  // rows whose inputs stay in L2 while all column blocks run
constexpr int kRows = 12;

// R rows (R <= 12) x 16*C columns (C = 1 or 2 zmm) starting at column j.
template <int R, int C>
void tile(int64_t i, int64_t j, const AffineInput* inputs, int n_inputs, const float* w,
          int64_t n_out, const float* bias, float* y, int64_t ldy) {
  __m512 acc[R][C];
  __m512 b[C];
  _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) b[c] = bias != nullptr ? _mm512_loadu_ps(bias + j + 16 * c) : _mm512_setzero_ps();
  _Pragma("GCC unroll 12") for (int r = 0; r < R; ++r) {
    _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) acc[r][c] = b[c];
  }
  // The tile's output lines into L1 now, while the FMAs run: the AQUA-KV rebuild writes rows
  // that were last touched two layers ago (in L3), and stores waiting for their lines at the
  // end of a tile would stall it.
  _Pragma("GCC unroll 12") for (int r = 0; r < R; ++r) {
    _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) _mm_prefetch(reinterpret_cast<const char*>(y + (i + r) * ldy + j + 16 * c), _MM_HINT_T0);
  }
  const float* wk = w + j;
  for (int s = 0; s < n_inputs; ++s) {
    const float* x[R];
    _Pragma("GCC unroll 12") for (int r = 0; r < R; ++r) x[r] = inputs[s].x + (i + r) * inputs[s].ld;
    const int64_t K = inputs[s].k;
    for (int64_t k = 0; k < K; ++k, wk += n_out) {
      __m512 wv[C];
      _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) wv[c] = _mm512_loadu_ps(wk + 16 * c);
      _Pragma("GCC unroll 12") for (int r = 0; r < R; ++r) {
        const __m512 xb = _mm512_set1_ps(x[r][k]);
        _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xb, wv[c], acc[r][c]);
      }
    }
  }
  _Pragma("GCC unroll 12") for (int r = 0; r < R; ++r) {
    _Pragma("GCC unroll 2") for (int c = 0; c < C; ++c) _mm512_storeu_ps(y + (i + r) * ldy + j + 16 * c, acc[r][c]);
  }
}

void one(int64_t i, int64_t j, const AffineInput* inputs, int n_inputs, const float* w,
         int64_t n_out, const float* bias, float* y, int64_t ldy) {
  float acc = bias != nullptr ? bias[j] : 0.0f;
  const float* wk = w + j;
  for (int s = 0; s < n_inputs; ++s) {
    const float* x = inputs[s].x + i * inputs[s].ld;
    for (int64_t k = 0; k < inputs[s].k; ++k, wk += n_out) acc = std::fma(x[k], *wk, acc);
  }
  y[i * ldy + j] = acc;
}

using TileFn = void (*)(int64_t, int64_t, const AffineInput*, int, const float*, int64_t,
                        const float*, float*, int64_t);
template <int C>
constexpr TileFn kTiles[kRows + 1] = {nullptr,     tile<1, C>,  tile<2, C>, tile<3, C>, tile<4, C>,
                                      tile<5, C>,  tile<6, C>,  tile<7, C>, tile<8, C>, tile<9, C>,
                                      tile<10, C>, tile<11, C>, tile<12, C>};

}  // namespace

void affine_rows_avx512(int64_t r0, int64_t r1, const AffineInput* inputs, int n_inputs,
                        const float* w, int64_t n_out, const float* bias, float* y, int64_t ldy) {
  for (int64_t t0 = r0; t0 < r1; t0 += kRowTile) {
    const int64_t t1 = t0 + kRowTile < r1 ? t0 + kRowTile : r1;
    int64_t j = 0;
    for (; j + 32 <= n_out; j += 32)
      for (int64_t i = t0; i < t1; i += kRows)
        kTiles<2>[t1 - i < kRows ? t1 - i : kRows](i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
    for (; j + 16 <= n_out; j += 16)
      for (int64_t i = t0; i < t1; i += kRows)
        kTiles<1>[t1 - i < kRows ? t1 - i : kRows](i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
    for (; j < n_out; ++j)
      for (int64_t i = t0; i < t1; ++i) one(i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
  }
}

}  // namespace aquakv::detail
