// AVX-512 VNNI kernels of ops/attn_qblock.h: q8_0 / q4_0 key scores with vpdpbusd, sixteen key
// rows per pass, and the weighted value sum straight from the blocks. Bit-identical to the
// scalar references (integer sums are exact; the float steps are the same operations in the same
// order).
//
// Scores, per block b and group of sixteen key rows: register P_i holds rows 2i and 2i+1 (32
// unsigned code bytes each: q8_0 c + 128, q4_0 nibbles unpacked to 32 bytes), vpdpbusd against
// the query block (broadcast to both halves) leaves eight partial sums per row; three levels of
// two-source permutes and adds turn the eight registers into one whose lane j is row j's integer
// sum (7 permute pairs instead of 16 horizontal reductions). Subtracting offset * sum(z), the
// conversion and the scale d_k * e (d_k gathered for the sixteen rows) run on sixteen lanes.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "aquakv/ops/attn_qblock.h"

namespace aquakv::detail {
namespace {

template <GgmlType T>
constexpr int64_t kBytes = T == GgmlType::Q8_0 ? 34 : 18;

// Rows a and b's codes of one block as unsigned bytes: [row a (32), row b (32)].
template <GgmlType T>
inline __m512i pair_codes(const uint8_t* a, const uint8_t* b) {
  if constexpr (T == GgmlType::Q8_0) {
    const __m512i z = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)), 1);
    return _mm512_xor_si512(z, _mm512_set1_epi8(char(0x80)));
  } else {
    // [A, A, B, B] by 128-bit lanes; low nibbles in lanes 0 and 2, high nibbles in 1 and 3.
    const __m512i za = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2)));
    const __m512i z = _mm512_inserti64x4(
        za, _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2))), 1);
    const __m512i m = _mm512_set1_epi8(15);
    return _mm512_mask_blend_epi64(0xCC, _mm512_and_si512(z, m), _mm512_and_si512(_mm512_srli_epi16(z, 4), m));
  }
}

// a + b lane-wise after picking lanes ia / ib of the pair (a, b) (two-source permutes).
inline __m512i fold(__m512i a, __m512i b, __m512i ia, __m512i ib) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, ia, b), _mm512_permutex2var_epi32(a, ib, b));
}

template <GgmlType T>
void scores(const AttnQBlock* q, int64_t M, int64_t hd, const uint8_t* k, int64_t t, int64_t ks,
            float* s, int64_t ss) {
  constexpr int64_t bb = kBytes<T>;
  constexpr int32_t offset = T == GgmlType::Q8_0 ? 128 : 8;  // sum of u8 * z = I + offset * sum(z)
  const int64_t nb = hd / 32;
  const __m512i i1a = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i i1b = _mm512_add_epi32(i1a, _mm512_set1_epi32(4));
  const __m512i i2a = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
  const __m512i i2b = _mm512_add_epi32(i2a, _mm512_set1_epi32(2));
  const __m512i i3a = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i i3b = _mm512_add_epi32(i3a, _mm512_set1_epi32(1));
  const __m512i rowoff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(int32_t(ks)));
  int64_t j0 = 0;
  for (; j0 + 16 <= t; j0 += 16) {
    const uint8_t* kj = k + j0 * ks;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* kb = kj + b * bb;
      __m512i P[8];
      for (int i = 0; i < 8; ++i) P[i] = pair_codes<T>(kb + (2 * i) * ks, kb + (2 * i + 1) * ks);
      // The sixteen rows' scales (the fp16 in the low half of each gathered 32-bit word).
      const __m512 dk = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(rowoff, kb, 1)));
      for (int64_t r = 0; r < M; ++r) {
        const AttnQBlock& qb = q[r * nb + b];
        const __m512i Q = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb.q)));
        __m512i D[8];
        for (int i = 0; i < 8; ++i) D[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), P[i], Q);
        const __m512i W0 = fold(D[0], D[1], i1a, i1b), W1 = fold(D[2], D[3], i1a, i1b);
        const __m512i W2 = fold(D[4], D[5], i1a, i1b), W3 = fold(D[6], D[7], i1a, i1b);
        const __m512i X0 = fold(W0, W1, i2a, i2b), X1 = fold(W2, W3, i2a, i2b);
        const __m512i I = _mm512_sub_epi32(fold(X0, X1, i3a, i3b), _mm512_set1_epi32(offset * qb.sum));
        float* sr = s + r * ss + j0;
        const __m512 acc = b == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(sr);
        _mm512_storeu_ps(sr, _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_mul_ps(dk, _mm512_set1_ps(qb.d)), acc));
      }
    }
  }
  if (j0 < t) attn_scores_qblock_ref(T, q, M, hd, k + j0 * ks, t - j0, ks, s + j0, ss);
}

// 32 values of a block as two registers of 16 floats, d * c.
template <GgmlType T>
inline void block_values(const uint8_t* blk, __m512& v0, __m512& v1) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(uint16_t(blk[0] | (blk[1] << 8))));
  __m512i x0, x1;
  if constexpr (T == GgmlType::Q8_0) {
    x0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    x1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
  } else {
    const __m128i by = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i m = _mm_set1_epi8(15);
    const __m512i eight = _mm512_set1_epi32(8);
    x0 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(by, m)), eight);
    x1 = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(by, 4), m)), eight);
  }
  v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(x0), d);
  v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(x1), d);
}

// R query rows x NB blocks (32 channels each) of the output, accumulators in registers.
template <GgmlType T, int R, int NB>
void accum_rb(const float* p, int64_t t, int64_t ps, const uint8_t* v, int64_t vs, float* a, int64_t as) {
  __m512 acc[R][2 * NB];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 2 * NB; ++i) acc[r][i] = _mm512_loadu_ps(a + r * as + 16 * i);
  for (int64_t j = 0; j < t; ++j) {
    __m512 x[2 * NB];
    for (int b = 0; b < NB; ++b) block_values<T>(v + j * vs + b * kBytes<T>, x[2 * b], x[2 * b + 1]);
    for (int r = 0; r < R; ++r) {
      const __m512 pj = _mm512_set1_ps(p[r * ps + j]);
      for (int i = 0; i < 2 * NB; ++i) acc[r][i] = _mm512_fmadd_ps(pj, x[i], acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 2 * NB; ++i) _mm512_storeu_ps(a + r * as + 16 * i, acc[r][i]);
}

template <GgmlType T, int NB>
void accum_b(const float* p, int64_t M, int64_t t, int64_t ps, const uint8_t* v, int64_t vs, float* a, int64_t as) {
  int64_t r = 0;
  for (; r + 4 <= M; r += 4) accum_rb<T, 4, NB>(p + r * ps, t, ps, v, vs, a + r * as, as);
  switch (M - r) {
    case 3: accum_rb<T, 3, NB>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    case 2: accum_rb<T, 2, NB>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    case 1: accum_rb<T, 1, NB>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    default: break;
  }
}

template <GgmlType T>
void accum(const float* p, int64_t M, int64_t t, int64_t ps, const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  const int64_t nb = hd / 32;
  for (int64_t b = 0; b < nb; b += 2) {
    if (nb - b >= 2) accum_b<T, 2>(p, M, t, ps, v + b * kBytes<T>, vs, a + 32 * b, hd);
    else accum_b<T, 1>(p, M, t, ps, v + b * kBytes<T>, vs, a + 32 * b, hd);
  }
}

}  // namespace

void attn_scores_qblock_avx512(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                               const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss) {
  if (type == GgmlType::Q8_0) scores<GgmlType::Q8_0>(q, M, hd, k, t, ks, s, ss);
  else scores<GgmlType::Q4_0>(q, M, hd, k, t, ks, s, ss);
}

void attn_accum_qblock_avx512(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                              const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  if (type == GgmlType::Q8_0) accum<GgmlType::Q8_0>(p, M, t, ps, v, vs, hd, a);
  else accum<GgmlType::Q4_0>(p, M, t, ps, v, vs, hd, a);
}

}  // namespace aquakv::detail
