// AVX2 Hadamard kernels. Each butterfly computes a + b and a - b exactly as the scalar reference
// does (multiplying by +-1 is exact, so sign*v + t rounds once, like a +- b), hence the results
// are bit-identical to hadamard_transform_scalar.
#include <immintrin.h>

#include <cstdint>

#include "aquakv/quant/hadamard.h"

namespace aquakv::detail {

void fwht_pow2_avx2(float* x, int64_t n) {
  // Stages h = 1, 2, 4 inside each 8-float vector.
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  auto in_vector = [&](__m256 v) {
    v = _mm256_add_ps(_mm256_mul_ps(v, s1), _mm256_permute_ps(v, 0xB1));
    v = _mm256_add_ps(_mm256_mul_ps(v, s2), _mm256_permute_ps(v, 0x4E));
    return _mm256_add_ps(_mm256_mul_ps(v, s4), _mm256_permute2f128_ps(v, v, 1));
  };
  if (n == 16) {  // the inner factor of 192 and 320: all four stages in registers
    const __m256 a = in_vector(_mm256_loadu_ps(x)), b = in_vector(_mm256_loadu_ps(x + 8));
    _mm256_storeu_ps(x, _mm256_add_ps(a, b));
    _mm256_storeu_ps(x + 8, _mm256_sub_ps(a, b));
    return;
  }
  for (int64_t i = 0; i < n; i += 8) _mm256_storeu_ps(x + i, in_vector(_mm256_loadu_ps(x + i)));
  // Stages h >= 8 between vectors; two stages at a time where possible to halve memory passes.
  int64_t h = 8;
  for (; 4 * h <= n; h *= 4) {
    for (int64_t i = 0; i < n; i += 4 * h) {
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        const __m256 c = _mm256_loadu_ps(x + j + 2 * h), d = _mm256_loadu_ps(x + j + 3 * h);
        const __m256 ab0 = _mm256_add_ps(a, b), ab1 = _mm256_sub_ps(a, b);
        const __m256 cd0 = _mm256_add_ps(c, d), cd1 = _mm256_sub_ps(c, d);
        _mm256_storeu_ps(x + j, _mm256_add_ps(ab0, cd0));
        _mm256_storeu_ps(x + j + h, _mm256_add_ps(ab1, cd1));
        _mm256_storeu_ps(x + j + 2 * h, _mm256_sub_ps(ab0, cd0));
        _mm256_storeu_ps(x + j + 3 * h, _mm256_sub_ps(ab1, cd1));
      }
    }
  }
  for (; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
        _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
        _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
      }
    }
  }
}

void hadamard_mix_avx2(const MixPlan& plan, float* x, int64_t m) {
  const int p = plan.p;
  const __m256 two = _mm256_set1_ps(2.0f);
  __m256 out[20];
  for (int64_t j = 0; j < m; j += 8) {
    __m256 t = _mm256_loadu_ps(x + j);
    for (int a = 1; a < p; ++a) t = _mm256_add_ps(t, _mm256_loadu_ps(x + a * m + j));
    for (int i = 0; i < p; ++i) {
      __m256 s = _mm256_setzero_ps();
      for (int k = 0; k < plan.nneg[i]; ++k) s = _mm256_add_ps(s, _mm256_loadu_ps(x + plan.neg[i][k] * m + j));
      out[i] = _mm256_fnmadd_ps(two, s, t);  // t - 2s, one rounding (2s is exact)
    }
    for (int i = 0; i < p; ++i) _mm256_storeu_ps(x + i * m + j, out[i]);
  }
}

}  // namespace aquakv::detail
