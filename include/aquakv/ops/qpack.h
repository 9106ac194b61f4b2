// Weight rows repacked at load time into 16-row interleaved groups for the decode dot kernels.
// Owns: the packed byte layout (pack, unpack, dequantize), the packed dot kernels (scalar
// reference, AVX2, AVX-512 VNNI) and their dispatch. Not: the GGUF row layout (ops/ggml_types.h),
// activation quantization (ops/qdot.h) or the matrix loops (ops/matmul.h).
//
// Why: on the GGUF layout one SIMD register holds 32 codes of one row, so every 32-value block
// of every row pays its own unpack, scale broadcast, float conversion and scalar offset term
// (~14 instructions per row-block), and a matrix is 16 interleaved row streams when several rows
// share an activation load. Packed, one 512-bit register holds 4 codes of each of 16 rows: one
// vpdpbusd against the activation's 4 bytes broadcast adds a 4-term dot into each row's lane,
// and the block's 16 scales and offsets are applied as vectors (~2 instructions per row-block);
// a group is one contiguous stream. Several activation vectors (a batched decode step) reuse
// each unpacked code register.
//
// Layout of a group of 16 rows, block b (32 values) after block b-1; same bytes as the rows:
//   Q4_0 (18 B/row-block): d[16] f16 | codes 4 x 64 B
//   Q4_1 (20 B/row-block): d[16] f16 | m[16] f16 | codes 4 x 64 B
//   Q5_0 (22 B/row-block): d[16] f16 | fifth bits 64 B | codes 4 x 64 B
//   Q5_1 (24 B/row-block): d[16] f16 | m[16] f16 | fifth bits 64 B | codes 4 x 64 B
//   Q8_0 (34 B/row-block): d[16] f16 | codes 8 x 64 B
// Q4 chunk j (0..3), byte 4r+i = the GGUF byte qs[4j+i] of row r: low nibble = value 4j+i, high
// nibble = value 16+4j+i; Q5_* fifth bits: 8 little-endian 64-bit masks, mask 2j (2j+1) bit
// 4r+i = fifth bit of the low (high) nibble's code at byte 4r+i of chunk j. Q8_0 chunk j (0..7),
// byte 4r+i = code 4j+i of row r, plus 128 (u8).
//
// Arithmetic, the same at every SIMD level (so all levels and all activation counts give
// bit-identical results), per row r and activation vector a, blocks in order:
//   isum = sum_k c_k * q_k                          (exact, int32)
//   acc  = fma(float(isum), dw * a.d, acc)          (dw * a.d rounded once, in f32)
//   accm = fma(m, a.s, accm)     (Q4_1/Q5_1: m; Q4_0: m = -8 dw; Q5_0: m = -16 dw; Q8_0: none)
//   out  = acc + accm
// Against the GGUF-layout kernels of ops/qdot.h only the float rounding differs (same error
// bound: sum_j |w_j| * a.d / 2 per block from the activation's int8 rounding, plus f32 sums).
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/qdot.h"

namespace aquakv {

inline constexpr int64_t kPackRows = 16;

// True for the types with a packed layout (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the K-quants Q4_K,
// Q5_K and Q6_K, whose layouts and arithmetic are described in src/ops/qpack_k.cpp: the same scheme
// per 32-value sub-block, with the sub-block's scale d*sc and offset dmin*mn formed in f32).
bool qpack_supported(GgmlType type);

// Bytes of one packed group of 16 rows of `cols` values (= 16 GGUF rows; Q4_K: 148/144 of them).
int64_t qpack_group_bytes(GgmlType type, int64_t cols);

// Packs 16 GGUF rows (row r at rows + r*row_bytes) into one group, and back (bit-exact).
void qpack_group(GgmlType type, const uint8_t* rows, int64_t row_bytes, int64_t cols, uint8_t* group);
void qunpack_group(GgmlType type, const uint8_t* group, int64_t cols, uint8_t* rows, int64_t row_bytes);

// (K-quants: cols a multiple of 256.)
// Dequantizes the 16 rows of a group into out (row r at out + r*ld, ld >= cols) straight from
// the packed bytes, bit-identical to dequantize_row_ref on the GGUF rows (each value is the
// format's float formula, e.g. Q4_K's (d*sc)*q - dmin*mn, in the reference's order of
// operations). This is what prefill's GEMM tiles are made of (ops/matmul.h). *_ref is the scalar
// reference (src/ops/qpack_dequant.cpp); the other dispatches on simd_level().
void qpack_dequant_group_ref(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld);
void qpack_dequant_group(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld);

// Dots of groups [g0, g1) of a packed matrix (group g at packed + g*qpack_group_bytes) with
// n_act activation vectors (x holds n_act runs of cols/32 blocks):
//   out[t * out_stride + 16*g + r] = dot(row 16g + r, activation t)     (arithmetic above).
// *_ref is the scalar reference; the other dispatches on simd_level().
void qpack_dot_ref(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                   const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);
void qpack_dot(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
               const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);

namespace detail {
void qpack_dot_avx2(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                    const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);
void qpack_dot_avx512(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                      const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);
void qpack_dequant_group_avx2(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld);
void qpack_dequant_group_avx512(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld);
}  // namespace detail

}  // namespace aquakv
