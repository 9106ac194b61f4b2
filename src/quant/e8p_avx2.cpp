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

void e8p_pattern_dists_avx2(const float* pat, int64_t stride, const float* pnorm, const int32_t* ppar,
                            int64_t k0, int64_t k1, const float* av, float nv, int32_t negpar,
                            float* dist) {
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
    _mm256_storeu_ps(dist + k, _mm256_add_ps(_mm256_sub_ps(vnv, _mm256_add_ps(b, b)), _mm256_loadu_ps(pnorm + k)));
  }
}

}  // namespace aquakv::detail
