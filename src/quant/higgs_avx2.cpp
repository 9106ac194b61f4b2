// AVX2 kernels of the HIGGS decoder: gather-and-scale of grid points. Each output is one
// multiply of a grid coordinate by the group factor, as in the scalar path (identical bits).
#include <immintrin.h>

#include <cstdint>

#include "higgs_kernels.h"

namespace aquakv::detail {

void gather_byte_table_scaled_avx2(const float* table, const uint8_t* bytes, int64_t nbytes, float f,
                                   float* out) {
  const __m256 vf = _mm256_set1_ps(f);
  int64_t b = 0;
  for (; b + 2 <= nbytes; b += 2) {
    const __m128 lo = _mm_loadu_ps(table + 4 * bytes[b]);
    const __m128 hi = _mm_loadu_ps(table + 4 * bytes[b + 1]);
    _mm256_storeu_ps(out + 4 * b, _mm256_mul_ps(_mm256_set_m128(hi, lo), vf));
  }
  if (b < nbytes) _mm_storeu_ps(out + 4 * b, _mm_mul_ps(_mm_loadu_ps(table + 4 * bytes[b]), _mm_set1_ps(f)));
}

void scale_avx2(float* x, int64_t n, float f) {
  const __m256 vf = _mm256_set1_ps(f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vf));
  for (; i < n; ++i) x[i] *= f;
}

}  // namespace aquakv::detail
