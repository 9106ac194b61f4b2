// AVX2 per-channel scale loops of ChannelScaledCodec (channel_scaled_kernels.h).
#include <immintrin.h>

#include "channel_scaled_kernels.h"

// The product and the sum are two roundings (decode's stored product, then an add); forbid
// contraction to FMA, which -mfma would otherwise allow.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv::detail {

void scale_channels_avx2(float* x, const float* s, int64_t rows, int64_t C) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * C;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) _mm256_storeu_ps(xr + c, _mm256_mul_ps(_mm256_loadu_ps(xr + c), _mm256_loadu_ps(s + c)));
    for (; c < C; ++c) xr[c] *= s[c];
  }
}

void scale_add_channels_avx2(const float* x, const float* s, int64_t rows, int64_t C, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(xr + c), _mm256_loadu_ps(s + c));
      _mm256_storeu_ps(yr + c, _mm256_add_ps(_mm256_loadu_ps(yr + c), p));
    }
    for (; c < C; ++c) yr[c] = yr[c] + xr[c] * s[c];
  }
}

}  // namespace aquakv::detail
