// AVX2+FMA kernel of affine_rows: 6-row x 16-column register tiles, each accumulator updated
// with one FMA per k in increasing k order (the order the scalar reference uses, so the results
// are bit-identical). Rows are processed in L2-sized tiles so W's column panels stay in L1.
#include <immintrin.h>

#include <cmath>

#include "aquakv/ops/affine_rows.h"

namespace aquakv::detail {
namespace {

constexpr int64_t kRowTile = 96;  // rows whose inputs stay in L2 while all column blocks run

// R rows (R <= 6) x 16 columns starting at column j.
template <int R>
void tile16(int64_t i, int64_t j, const AffineInput* inputs, int n_inputs, const float* w,
            int64_t n_out, const float* bias, float* y, int64_t ldy) {
  __m256 acc0[R], acc1[R];
  const __m256 b0 = bias != nullptr ? _mm256_loadu_ps(bias + j) : _mm256_setzero_ps();
  const __m256 b1 = bias != nullptr ? _mm256_loadu_ps(bias + j + 8) : _mm256_setzero_ps();
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) { acc0[r] = b0; acc1[r] = b1; }
  const float* wk = w + j;
  for (int s = 0; s < n_inputs; ++s) {
    const float* x[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) x[r] = inputs[s].x + (i + r) * inputs[s].ld;
    const int64_t K = inputs[s].k;
    for (int64_t k = 0; k < K; ++k, wk += n_out) {
      const __m256 w0 = _mm256_loadu_ps(wk), w1 = _mm256_loadu_ps(wk + 8);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
        const __m256 xb = _mm256_broadcast_ss(x[r] + k);
        acc0[r] = _mm256_fmadd_ps(xb, w0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(xb, w1, acc1[r]);
      }
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(y + (i + r) * ldy + j, acc0[r]);
    _mm256_storeu_ps(y + (i + r) * ldy + j + 8, acc1[r]);
  }
}

// R rows x 8 columns.
template <int R>
void tile8(int64_t i, int64_t j, const AffineInput* inputs, int n_inputs, const float* w,
           int64_t n_out, const float* bias, float* y, int64_t ldy) {
  __m256 acc[R];
  const __m256 b0 = bias != nullptr ? _mm256_loadu_ps(bias + j) : _mm256_setzero_ps();
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r] = b0;
  const float* wk = w + j;
  for (int s = 0; s < n_inputs; ++s) {
    const float* x[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) x[r] = inputs[s].x + (i + r) * inputs[s].ld;
    const int64_t K = inputs[s].k;
    for (int64_t k = 0; k < K; ++k, wk += n_out) {
      const __m256 w0 = _mm256_loadu_ps(wk);
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(x[r] + k), w0, acc[r]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) _mm256_storeu_ps(y + (i + r) * ldy + j, acc[r]);
}

// One row, one column, scalar (column tails narrower than 8).
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
constexpr TileFn kTile16[7] = {nullptr, tile16<1>, tile16<2>, tile16<3>,
                               tile16<4>, tile16<5>, tile16<6>};
constexpr TileFn kTile8[7] = {nullptr, tile8<1>, tile8<2>, tile8<3>, tile8<4>, tile8<5>, tile8<6>};

}  // namespace

void affine_rows_avx2(int64_t r0, int64_t r1, const AffineInput* inputs, int n_inputs,
                      const float* w, int64_t n_out, const float* bias, float* y, int64_t ldy) {
  for (int64_t t0 = r0; t0 < r1; t0 += kRowTile) {
    const int64_t t1 = t0 + kRowTile < r1 ? t0 + kRowTile : r1;
    int64_t j = 0;
    for (; j + 16 <= n_out; j += 16) {
      for (int64_t i = t0; i < t1; i += 6) {
        const int R = int(t1 - i < 6 ? t1 - i : 6);
        kTile16[R](i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
      }
    }
    for (; j + 8 <= n_out; j += 8) {
      for (int64_t i = t0; i < t1; i += 6) {
        const int R = int(t1 - i < 6 ? t1 - i : 6);
        kTile8[R](i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
      }
    }
    for (; j < n_out; ++j) {
      for (int64_t i = t0; i < t1; ++i) one(i, j, inputs, n_inputs, w, n_out, bias, y, ldy);
    }
  }
}

}  // namespace aquakv::detail
