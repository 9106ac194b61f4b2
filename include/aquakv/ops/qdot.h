// Quantized dot products: one weight row stored in a GGUF block format times one activation
// vector. Owns: the 8-bit activation blocks (Q8Act) and the row-dot kernels, scalar reference
// and AVX2 and AVX-512 VNNI versions. Not: block byte layouts / dequantization (ops/ggml_types.h) or matrix loops
// (ops/matmul.h).
//
// Two families:
//  * Integer path (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): activations are first quantized to Q8Act
//    blocks of 32 (d = max|x|/127, q = round(x/d), s = d*sum(q)), as ggml does. A weight block
//    with scale dw, offset m and integer codes c_j gives
//        sum_j (dw*c_j + m) * (d*q_j) = dw*d*sum_j c_j*q_j + m*s
//    (Q4_0/Q5_0 have m = -8*dw / -16*dw on unsigned codes; Q8_0 has m = 0 on signed codes).
//    The added error versus f32 activations is bounded per block by sum_j |w_j| * d/2
//    (rounding error of q_j is at most d/2); tests/test_qdot.cpp checks that bound.
//  * Float path (every other supported type: F32, F16, BF16, Q4_K, Q5_K, Q6_K, ...): the row is
//    dequantized a chunk at a time and dotted with f32 activations; no activation error.
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"

namespace aquakv {

// 32 activations quantized to int8 with one f32 scale; s = d * sum(q).
struct Q8Act {
  float d;
  float s;
  int8_t q[32];
};

// True when `type` uses the integer path (its rows need Q8Act activations).
bool qdot_uses_q8(GgmlType type);

// Quantizes n floats (multiple of 32) into n/32 blocks. Scalar reference and dispatching version
// give bit-identical blocks: q = nearest-even(x * (1/d)) in f32, d = max|x|/127, s = d*sum(q).
void quantize_q8_ref(const float* x, Q8Act* out, int64_t n);
void quantize_q8(const float* x, Q8Act* out, int64_t n);

// Dot of one row of n values (n multiple of the type's block size) of an integer-path type with
// Q8Act activations. *_ref is the scalar reference; the other dispatches on simd_level().
float qdot_q8_ref(GgmlType type, const void* row, const Q8Act* x, int64_t n);
float qdot_q8(GgmlType type, const void* row, const Q8Act* x, int64_t n);

// Dots of one row with n_act activation vectors at once (decode of several sequences): x holds
// n_act runs of n/32 blocks back to back, out[t] = qdot_q8(type, row, x + t*n/32, n) bit for
// bit (each activation keeps the single-row kernel's accumulators and order of additions). The
// loop over activations sits inside the loop over weight blocks, so each weight block is loaded
// (and, in AVX2, unpacked) once for a group of activations instead of once per activation.
void qdot_q8_rows_ref(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                      float* out);
void qdot_q8_rows(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                  float* out);

// Dots of n_rows weight rows (row r at rows + r*row_bytes) with one activation vector (decode
// of one sequence): out[r] = qdot_q8(type, row r, x, n) bit for bit. Today a loop of single
// dots at every level: on the GGUF row layout, groups of rows sharing each activation load were
// measured slower (src/ops/qdot_avx512.cpp). Matrices repacked at load (ops/qpack.h) take the
// packed kernels instead; this path serves the rows of types without a packed layout.
void qdot_q8_multirow_ref(GgmlType type, const void* rows, int64_t row_bytes, int64_t n_rows,
                          const Q8Act* x, int64_t n, float* out);
void qdot_q8_multirow(GgmlType type, const void* rows, int64_t row_bytes, int64_t n_rows,
                      const Q8Act* x, int64_t n, float* out);

// Dot of one row of any supported type with f32 activations (float path).
float qdot_f32_ref(GgmlType type, const void* row, const float* x, int64_t n);
float qdot_f32(GgmlType type, const void* row, const float* x, int64_t n);

// Plain f32 dot product (AVX2 when available).
float dot_f32(const float* a, const float* b, int64_t n);

namespace detail {
// AVX2 kernels (src/ops/qdot_avx2.cpp); called at kAvx2, and at kAvx512 where no AVX-512 one exists.
void quantize_q8_avx2(const float* x, Q8Act* out, int64_t n);
float qdot_q8_avx2(GgmlType type, const void* row, const Q8Act* x, int64_t n);
void qdot_q8_rows_avx2(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                       float* out);
float dot_f32_avx2(const float* a, const float* b, int64_t n);
// AVX-512 VNNI kernels (src/ops/qdot_avx512.cpp); only called at SimdLevel::kAvx512.
float qdot_q8_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n);
void qdot_q8_rows_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                         float* out);
}  // namespace detail

}  // namespace aquakv
