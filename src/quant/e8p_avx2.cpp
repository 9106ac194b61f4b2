// AVX2 pattern pass of the E8P search: 8 patterns per vector, the same float operations in the
// same order as e8p_pattern_dists_scalar (multiply then add, no FMA), so the distances are
// bit-identical.
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif
#include <immintrin.h>

#include <cstdint>

#include "aquakv/quant/e8p.h"

namespace aquakv::detail {

float e8p_pattern_dists_avx2(const float* pat, int64_t stride, const float* pnorm, const int32_t* ppar,
                             int64_t k0, int64_t k1, const float* av, float nv, int32_t negpar,
                             float* dist) {
  __m256 lowest = _mm256_set1_ps(__builtin_inff());
  __m256 a[8];
  for (int j = 0; j < 8; ++j) a[j] = _mm256_set1_ps(av[j]);
  const __m256 vnv = _mm256_set1_ps(nv);
  const __m256i vneg = _mm256_set1_epi32(negpar);
  for (int64_t k = k0; k < k1; k += 8) {
    __m256 c = _mm256_mul_ps(a[0], _mm256_loadu_ps(pat + k));
    __m256 t = _mm256_add_ps(_mm256_setzero_ps(), c);
    __m256 m = c;
    for (int j = 1; j < 8; ++j) {
      c = _mm256_mul_ps(a[j], _mm256_loadu_ps(pat + j * stride + k));
      t = _mm256_add_ps(t, c);
      m = _mm256_min_ps(c, m);  // c < m ? c : m
    }
    const __m256 wrong = _mm256_castsi256_ps(_mm256_xor_si256(
        _mm256_cmpeq_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ppar + k)), vneg),
        _mm256_set1_epi32(-1)));
    const __m256 b = _mm256_blendv_ps(t, _mm256_sub_ps(t, _mm256_add_ps(m, m)), wrong);
    const __m256 dk = _mm256_add_ps(_mm256_sub_ps(vnv, _mm256_add_ps(b, b)), _mm256_loadu_ps(pnorm + k));
    _mm256_storeu_ps(dist + k, dk);
    lowest = _mm256_min_ps(lowest, dk);
  }
  __m128 m4 = _mm_min_ps(_mm256_castps256_ps128(lowest), _mm256_extractf128_ps(lowest, 1));
  m4 = _mm_min_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_min_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
}

uint64_t e8p_within_avx2(const float* dist, int64_t k0, int64_t k1, float lim) {
  const __m256 l = _mm256_set1_ps(lim);
  uint64_t bits = 0;
  int64_t k = k0;
  for (; k + 8 <= k1; k += 8) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(dist + k), l, _CMP_LE_OQ));
    bits |= uint64_t(unsigned(m)) << (k - k0);
  }
  for (; k < k1; ++k) bits |= uint64_t(dist[k] <= lim) << (k - k0);
  return bits;
}

void e8p_cosets_avx2(const float* u, float* h, float* step, float* c, float* base, float* cmin, int32_t* par) {
  const __m256 vu = _mm256_loadu_ps(u);
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int sh = 0; sh < 2; ++sh) {
    const __m256 v = _mm256_sub_ps(vu, _mm256_set1_ps(sh == 0 ? 0.25f : -0.25f));
    const __m256 f = _mm256_floor_ps(v);
    const __m256i fi = _mm256_cvttps_epi32(f);
    const int bits = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(fi, 31)));
    par[sh] = __builtin_popcount(unsigned(bits)) & 1;
    const __m256 hv = _mm256_add_ps(f, half);
    const __m256 e = _mm256_sub_ps(v, hv);
    _mm256_storeu_ps(h + 8 * sh, hv);
    // e >= 0 ? +1 : -1
    const __m256 ge = _mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_GE_OQ);
    _mm256_storeu_ps(step + 8 * sh, _mm256_blendv_ps(_mm256_set1_ps(-1.0f), one, ge));
    const __m256 cv = _mm256_sub_ps(one, _mm256_mul_ps(two, _mm256_and_ps(e, absmask)));
    _mm256_storeu_ps(c + 8 * sh, cv);
    // min and the sum of squares, in the scalar reference's order
    __m128 m4 = _mm_min_ps(_mm256_castps256_ps128(cv), _mm256_extractf128_ps(cv, 1));
    m4 = _mm_min_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_min_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    cmin[sh] = _mm_cvtss_f32(m4);
    const __m256 e2 = _mm256_mul_ps(e, e);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(e2), _mm256_extractf128_ps(e2, 1));  // e_j^2 + e_{j+4}^2
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // (s0 + s2), (s1 + s3)
    base[sh] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
}

}  // namespace aquakv::detail
