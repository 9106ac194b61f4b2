// affine_rows: row-wise affine maps Y = [X_1 X_2 ...] W + b over a block of rows, the GEMM that
// AQUA-KV predictors run over whole chunks. Owns: the kernel and its fixed summation order.
// Not: predictor storage or fitting (kv/predictor.h, calib/).
//
// Every output element is computed as
//     acc = b[j] (or 0);  for k = 0 .. K-1:  acc = fma(x[k], W[k][j], acc)
// in exactly that order, so a row's result is bit-identical whatever the number of rows in the
// call, how rows are grouped into chunks, the thread count and the SIMD level. The cache relies
// on this: the encoder and the decoder reconstruct a token identically, and a token's
// reconstruction does not depend on chunk boundaries. (OpenBLAS sgemm gives no such promise.)
#pragma once

#include <cstdint>

namespace aquakv {

// One horizontal block of the input: rows x + i*ld, k values each.
struct AffineInput {
  const float* x = nullptr;
  int64_t ld = 0;
  int64_t k = 0;
};

// Y (n, n_out, row stride ldy) = concat(inputs) (n, K) * W (K, n_out row-major) + bias (n_out, or
// nullptr for zero), K = sum of the inputs' k. Blocked over rows and columns (6x16 register
// tiles on AVX2, 12x32 on AVX-512) and spread over threads for large n.
void affine_rows(int64_t n, const AffineInput* inputs, int n_inputs, const float* w,
                 int64_t n_out, const float* bias, float* y, int64_t ldy);

// The scalar reference (same order, std::fma), kept for tests.
void affine_rows_ref(int64_t n, const AffineInput* inputs, int n_inputs, const float* w,
                     int64_t n_out, const float* bias, float* y, int64_t ldy);

namespace detail {
// AVX2+FMA kernel for rows [r0, r1) (defined in affine_rows_avx2.cpp).
void affine_rows_avx2(int64_t r0, int64_t r1, const AffineInput* inputs, int n_inputs,
                      const float* w, int64_t n_out, const float* bias, float* y, int64_t ldy);
// AVX-512 kernel, 12x32 tiles (affine_rows_avx512.cpp); same order, same bits.
void affine_rows_avx512(int64_t r0, int64_t r1, const AffineInput* inputs, int n_inputs,
                        const float* w, int64_t n_out, const float* bias, float* y, int64_t ldy);
}  // namespace detail

}  // namespace aquakv
