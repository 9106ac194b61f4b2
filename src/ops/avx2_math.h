// Vector math shared by the AVX2+FMA kernel files (include only from *_avx2.cpp files, which are
// compiled with those flags): e^x for x <= 0, horizontal max / sum of 8 floats, and bit -> byte
// expansion of 5-bit codes' fifth bits.
#pragma once

#include <immintrin.h>

namespace aquakv::detail {

// e^x for x in [-87, 0]: x = n*ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor polynomial
// (truncation error |r|^7/7! < 1.4e-7 relative), times 2^n built in the exponent bits. Inputs
// below -87 (including -inf) are clamped to -87 (e^-87 ~ 1.6e-38).
inline __m256 exp_neg_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n*ln2 with ln2 split in a high part exact in float and a low correction.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// 32 bits -> 32 bytes, byte j = 16 when bit j of m is set, else 0 (the fifth bit of 5-bit
// codes). Byte j first receives byte j/8 of m (shuffle within each 128-bit lane, where the
// broadcast 32-bit value holds bytes 0..3), then tests bit j%8 of it.
inline __m256i bits_to_16s_avx2(uint32_t m) {
  const __m256i idx = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                        0x0101010101010101LL, 0x0000000000000000LL);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int32_t(m)), idx);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

inline float hmax_avx2(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace aquakv::detail
