// AVX-512 Hadamard kernels: the same butterflies and the same mixing order as the scalar
// reference (a + b and a - b per pair; T - 2 S_i with T and S_i summed in increasing a), on 16
// floats per register, so the results are bit-identical to hadamard_transform_scalar. Stages
// h = 1, 2, 4, 8 run inside a register (fwht16_avx512.h).
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

#include "aquakv/quant/hadamard.h"
#include "fwht16_avx512.h"

namespace aquakv::detail {

void fwht_pow2_avx512(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(x + i, fwht16_avx512(_mm512_loadu_ps(x + i)));
  // Stages h >= 16 between registers (each pair's a + b, a - b, as the scalar loop).
  for (int64_t h = 16; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + h);
        _mm512_storeu_ps(x + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(x + j + h, _mm512_sub_ps(a, b));
      }
    }
  }
}

void hadamard_mix_avx512(const MixPlan& plan, float* x, int64_t m) {
  const int p = plan.p;
  const __m512 two = _mm512_set1_ps(2.0f);
  __m512 out[20];
  for (int64_t j = 0; j < m; j += 16) {
    __m512 t = _mm512_loadu_ps(x + j);
    for (int a = 1; a < p; ++a) t = _mm512_add_ps(t, _mm512_loadu_ps(x + a * m + j));
    for (int i = 0; i < p; ++i) {
      __m512 s = _mm512_setzero_ps();
      for (int k = 0; k < plan.nneg[i]; ++k) s = _mm512_add_ps(s, _mm512_loadu_ps(x + plan.neg[i][k] * m + j));
      out[i] = _mm512_fnmadd_ps(two, s, t);  // t - 2s, one rounding (2s is exact)
    }
    for (int i = 0; i < p; ++i) _mm512_storeu_ps(x + i * m + j, out[i]);
  }
}

}  // namespace aquakv::detail
