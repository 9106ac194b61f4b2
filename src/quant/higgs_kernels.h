// Private to src/quant: HIGGS decoder kernels (AVX2 and AVX-512 versions of loops in higgs.cpp).
#pragma once

#include <cstdint>

namespace aquakv::detail {

// out[4b + j] = table[4 * bytes[b] + j] * f for b < nbytes, j < 4.
void gather_byte_table_scaled_avx2(const float* table, const uint8_t* bytes, int64_t nbytes, float f,
                                   float* out);
// x[i] *= f.
void scale_avx2(float* x, int64_t n, float f);


// AVX-512 (higgs_avx512.cpp): d = 2 grids of 16 points (4-bit codes), 64 (6-bit) or 256 (8-bit),
// groups of a multiple of 32 values.
bool higgs_pairs_avx512_fits(int64_t d, int64_t n, int code_bits, int64_t group);
// Rows of (ng fp16 group norms, then the codes) -> x[r*ng*group + i] = point coordinate *
// norm / sqrt(group): the scaled grid points, before the rotation.
void higgs_decode_pairs_avx512(const float* points, int64_t n, const uint8_t* in, int64_t rows, int64_t row_bytes,
                               int64_t ng, int64_t group, float* x);
// Groups of 192 = 12 x 16 values without sign flips, decoded in registers: the pairs grids above,
// d = 4 grids of 16 points (4-bit codes) and d = 8 grids with 16-bit codes (E8P).
bool higgs_group192_avx512_fits(int64_t d, int64_t n, int code_bits);
// Rows of (ng fp16 group norms, then the codes) -> the decoded rows (HiggsCodec::decode: scaled
// points, then D H_192 with D = I) written to y (add = false) or added to it (add = true: y + x
// element by element), fused: nothing but y is written. Same bits as HiggsCodec's scalar decode
// (then y + x).
void higgs_rebuild192_avx512(bool add, const float* points, int64_t d, int64_t n, const uint8_t* in, int64_t rows,
                             int64_t row_bytes, int64_t ng, float* y);

}  // namespace aquakv::detail
