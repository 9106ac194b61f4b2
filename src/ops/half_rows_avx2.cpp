// F16C batch conversion; tails go through the scalar conversion of util/fp16.h.
#include <immintrin.h>

#include "aquakv/util/fp16.h"
#include "aquakv/ops/half_rows.h"

namespace aquakv::detail {

void floats_to_halves_avx2(const float* x, int64_t n, uint16_t* h) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), v);
  }
  for (; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
}

void halves_to_floats_avx2(const uint16_t* h, int64_t n, float* x) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(v));
  }
  for (; i < n; ++i) x[i] = fp16_to_fp32(h[i]);
}

}  // namespace aquakv::detail
