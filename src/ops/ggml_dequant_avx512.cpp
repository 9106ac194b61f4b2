// AVX-512 decoders for the block formats the compressed KV caches store (Q8_0, Q4_0, Q4_1) and
// F16: 16 lanes per instruction, exactly the float32 operations of the scalar references in
// ggml_dequant_ref.cpp in the same order (one multiply, then an add where the format has an
// offset; this file is built with -ffp-contract=off), so the results are bit-identical.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "ggml_blocks.h"
#include "ggml_dequant.h"

namespace aquakv::ggml {
namespace {

inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Values 0..15 (low nibbles) and 16..31 (high nibbles) of a 4-bit block's 16 code bytes.
inline void nibbles(const uint8_t* qs, __m512i& lo, __m512i& hi) {
  const __m128i raw = load16(qs), mask = _mm_set1_epi8(0x0f);
  lo = _mm512_cvtepu8_epi32(_mm_and_si128(raw, mask));
  hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), mask));
}

}  // namespace

void dequant_f16_avx512(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i))));
  for (; i < n; ++i) dst[i] = read_f16(src + 2 * i);
}

void dequant_q8_0_avx512(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ8_0Bytes, dst += kQK) {
    const __m512 d = _mm512_set1_ps(read_f16(src));
    _mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(src + 2)))));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load16(src + 18)))));
  }
}

void dequant_q4_0_avx512(const uint8_t* src, float* dst, int64_t n) {
  const __m512i eight = _mm512_set1_epi32(8);
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_0Bytes, dst += kQK) {
    const __m512 d = _mm512_set1_ps(read_f16(src));
    __m512i lo, hi;
    nibbles(src + 2, lo, hi);
    _mm512_storeu_ps(dst, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight))));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight))));
  }
}

void dequant_q4_1_avx512(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_1Bytes, dst += kQK) {
    const __m512 d = _mm512_set1_ps(read_f16(src)), m = _mm512_set1_ps(read_f16(src + 2));
    __m512i lo, hi;
    nibbles(src + 4, lo, hi);
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), m));
    _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)), m));
  }
}

}  // namespace aquakv::ggml
