// AVX2 kernels of ops/attn_qblock.h, one key row at a time (bit-identical to the scalar
// references). Scores: vpmaddubsw takes unsigned x signed bytes into int16 pairs; q8_0 codes go
// in as |c| with c's sign moved onto the query code (|c| <= 128, |z| <= 127: a pair sums to at
// most 32512, no int16 saturation), q4_0 nibbles as they are (I = sum n z - 8 sum(z)); vpmaddwd
// by ones widens to int32 and a horizontal integer sum gives the block's exact I.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "aquakv/ops/attn_qblock.h"

namespace aquakv::detail {
namespace {

template <GgmlType T>
constexpr int64_t kBytes = T == GgmlType::Q8_0 ? 34 : 18;

inline int32_t hsum_epi32(__m256i x) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline float half_at(const uint8_t* p) { return _cvtsh_ss(uint16_t(p[0] | (p[1] << 8))); }

// Block integer sum I against query codes z (32 bytes at z).
template <GgmlType T>
inline int32_t block_isum(const uint8_t* blk, const AttnQBlock& qb) {
  const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb.q));
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (T == GgmlType::Q8_0) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i prod = _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(z, c));
    return hsum_epi32(_mm256_madd_epi16(prod, ones));
  } else {
    const __m128i by = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m = _mm_set1_epi8(15);
    const __m256i n = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(by, 4), m), _mm_and_si128(by, m));
    return hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(n, z), ones)) - 8 * qb.sum;
  }
}

template <GgmlType T>
void scores(const AttnQBlock* q, int64_t M, int64_t hd, const uint8_t* k, int64_t t, int64_t ks,
            float* s, int64_t ss) {
  const int64_t nb = hd / 32;
  for (int64_t j = 0; j < t; ++j)
    for (int64_t r = 0; r < M; ++r) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = k + j * ks + b * kBytes<T>;
        const AttnQBlock& qb = q[r * nb + b];
        acc = std::fma(float(block_isum<T>(blk, qb)), half_at(blk) * qb.d, acc);
      }
      s[r * ss + j] = acc;
    }
}

// 32 values of a block, d * c, as four registers of 8.
template <GgmlType T>
inline void block_values(const uint8_t* blk, __m256 x[4]) {
  const __m256 d = _mm256_set1_ps(half_at(blk));
  __m256i c[4];
  if constexpr (T == GgmlType::Q8_0) {
    for (int i = 0; i < 4; ++i) c[i] = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * i)));
  } else {
    const __m128i by = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(by, m), hi = _mm_and_si128(_mm_srli_epi16(by, 4), m);
    const __m256i eight = _mm256_set1_epi32(8);
    c[0] = _mm256_sub_epi32(_mm256_cvtepu8_epi32(lo), eight);
    c[1] = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), eight);
    c[2] = _mm256_sub_epi32(_mm256_cvtepu8_epi32(hi), eight);
    c[3] = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), eight);
  }
  for (int i = 0; i < 4; ++i) x[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(c[i]), d);
}

template <GgmlType T, int R>
void accum_r(const float* p, int64_t t, int64_t ps, const uint8_t* v, int64_t vs, float* a, int64_t as) {
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_loadu_ps(a + r * as + 8 * i);
  for (int64_t j = 0; j < t; ++j) {
    __m256 x[4];
    block_values<T>(v + j * vs, x);
    for (int r = 0; r < R; ++r) {
      const __m256 pj = _mm256_set1_ps(p[r * ps + j]);
      for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_fmadd_ps(pj, x[i], acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(a + r * as + 8 * i, acc[r][i]);
}

template <GgmlType T>
void accum(const float* p, int64_t M, int64_t t, int64_t ps, const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  for (int64_t b = 0; b < hd / 32; ++b) {
    const uint8_t* vb = v + b * kBytes<T>;
    float* ab = a + 32 * b;
    int64_t r = 0;
    for (; r + 3 <= M; r += 3) accum_r<T, 3>(p + r * ps, t, ps, vb, vs, ab + r * hd, hd);
    if (M - r == 2) accum_r<T, 2>(p + r * ps, t, ps, vb, vs, ab + r * hd, hd);
    if (M - r == 1) accum_r<T, 1>(p + r * ps, t, ps, vb, vs, ab + r * hd, hd);
  }
}

}  // namespace

void attn_scores_qblock_avx2(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                             const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss) {
  if (type == GgmlType::Q8_0) scores<GgmlType::Q8_0>(q, M, hd, k, t, ks, s, ss);
  else scores<GgmlType::Q4_0>(q, M, hd, k, t, ks, s, ss);
}

void attn_accum_qblock_avx2(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                            const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  if (type == GgmlType::Q8_0) accum<GgmlType::Q8_0>(p, M, t, ps, v, vs, hd, a);
  else accum<GgmlType::Q4_0>(p, M, t, ps, v, vs, hd, a);
}

}  // namespace aquakv::detail
