// AVX-512 per-channel scale loops of ChannelScaledCodec (channel_scaled_kernels.h); this file is
// built with -ffp-contract=off, so the product and the sum stay two roundings. Tails are masked.
#include <immintrin.h>

#include "channel_scaled_kernels.h"

namespace aquakv::detail {

void scale_channels_avx512(float* x, const float* s, int64_t rows, int64_t C) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1);
      _mm512_mask_storeu_ps(xr + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + c), _mm512_maskz_loadu_ps(m, s + c)));
    }
  }
}

void scale_add_channels_avx512(const float* x, const float* s, int64_t rows, int64_t C, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = C - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (C - c)) - 1);
      const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + c), _mm512_maskz_loadu_ps(m, s + c));
      _mm512_mask_storeu_ps(yr + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, yr + c), p));
    }
  }
}

}  // namespace aquakv::detail
