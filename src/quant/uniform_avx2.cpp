// AVX2 kernels of quant/uniform_kernels.h. Multiply then add (no fused multiply-add), as the
// scalar loops in uniform.cpp, so both give identical floats.
#include <immintrin.h>

// Keep the multiply and the add separate (this file is built with -mfma, where GCC may fuse
// them; code * scale is exact anyway for codes of <= 8 bits and fp16 scales).
#pragma GCC optimize("fp-contract=off")

#include "uniform_kernels.h"

namespace aquakv::detail {

void scale_offset_avx2(float* x, int64_t n, float s, float z) {
  const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), vz));
  for (; i < n; ++i) x[i] = x[i] * s + z;
}

void scale_offset_channels_avx2(float* x, int64_t rows, int64_t dim, const float* s, const float* z) {
  for (int64_t t = 0; t < rows; ++t) {
    float* xt = x + t * dim;
    int64_t c = 0;
    for (; c + 8 <= dim; c += 8)
      _mm256_storeu_ps(xt + c, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(xt + c), _mm256_loadu_ps(s + c)), _mm256_loadu_ps(z + c)));
    for (; c < dim; ++c) xt[c] = xt[c] * s[c] + z[c];
  }
}

}  // namespace aquakv::detail
