// Private to src/quant: HIGGS decoder kernels (AVX2 and AVX-512 versions of loops in higgs.cpp).
#pragma once

#include <cstdint>
#include <vector>

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
// An 8-dimensional grid whose every point is s (.) a + sigma 1 (E8P's structure, quant/e8p.h):
// a one of at most 256 absolute patterns, s a sign vector, sigma = +-shift. Its points rebuilt
// from `code` (4 bytes a point) and `pat` (8 KB) instead of read from the 2 MiB float table, so
// a decoder's random reads stay in L2.
struct SignedPatterns {
  std::vector<float> pat;        // (256, 8) the absolute patterns, zero-padded
  std::vector<uint32_t> code;    // (n) per point: bits 0-7 pattern, bits 8-15 the negative
                                 // coordinates (bit 8 + j: coordinate j), bits 16-23 all set
                                 // when sigma < 0
  float shift = 0;               // |sigma|
};
// The decomposition of g's points when they all have that form and rebuild bit for bit in float
// (pattern coordinate with its sign, plus sigma); empty `code` otherwise (d != 8, more than 256
// patterns, two shifts, ...).
SignedPatterns signed_patterns(const float* points, int64_t n, int d);

// Groups of 192 = 12 x 16 values without sign flips, decoded in registers: the pairs grids above,
// d = 4 grids of 16 points (4-bit codes) and d = 8 grids with 16-bit codes (E8P).
bool higgs_group192_avx512_fits(int64_t d, int64_t n, int code_bits);
// Rows of (ng fp16 group norms, then the codes) -> the decoded rows (HiggsCodec::decode: scaled
// points, then D H_192 with D = I) written to y (add = false) or added to it (add = true: y + x
// element by element), fused: nothing but y is written. Same bits as HiggsCodec's scalar decode
// (then y + x).
// sp: the grid's SignedPatterns when it has them (d = 8; nullptr: read the float table).
void higgs_rebuild192_avx512(bool add, const float* points, int64_t d, int64_t n, const SignedPatterns* sp,
                             const uint8_t* in, int64_t rows, int64_t row_bytes, int64_t ng, float* y);

}  // namespace aquakv::detail
