// AVX2 kernel of ops/attn_lut.h: sixteen key rows at a time, table lookups with vpshufb.
//
// Transpose. A chunk of 16 code bytes (32 pairs) of sixteen rows is loaded as eight registers
// [row i | row i + 8]. Three unpack stages (bytes, 16-bit, 32-bit units) leave, for k = 0..7,
// lane 0 = [byte 2k of rows 0-7, byte 2k+1 of rows 0-7] and lane 1 = the same of rows 8-15; one
// vpermq per register makes it [byte 2k of rows 0-15 | byte 2k+1 of rows 0-15]. Byte 2k holds
// pairs 4k (low nibble) and 4k+1 (high), byte 2k+1 pairs 4k+2 and 4k+3: hence the tables' order
// 4k, 4k+2 (one register: the low nibbles' tables) and 4k+1, 4k+3 (the high nibbles').
//
// Sums. A lookup gives 32 bytes (two pairs x sixteen rows); even and odd bytes (rows 0, 2, ... and
// 1, 3, ...) are added into two sets of 16-bit lanes, and the two lanes (pairs of the same rows)
// are added at the end. The sums are exact (<= 255 P < 2^16), so the result is the reference's.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "aquakv/ops/attn_lut.h"

namespace aquakv::detail {
namespace {

// Codes of sixteen rows, one 16-byte chunk each, to eight registers as described above.
inline void transpose16(const uint8_t* c, int64_t rs, __m256i* y) {
  __m256i x[8];
  for (int i = 0; i < 8; ++i)
    x[i] = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + i * rs))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + (i + 8) * rs)), 1);
  __m256i a[8], b[8];
  for (int i = 0; i < 4; ++i) {  // rows 2i, 2i+1: bytes 0-7 (a[2i]) and 8-15 (a[2i+1])
    a[2 * i] = _mm256_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
  }
  // rows 0-3 / 4-7; bytes 0-3, 4-7, 8-11, 12-15: b[q] rows 0-3, b[4 + q] rows 4-7.
  for (int h = 0; h < 2; ++h) {
    const int r = 4 * h;  // a[r..r+3]: rows 4h..4h+3 -- a[r] = rows (4h, 4h+1) bytes 0-7, a[r+2] rows (4h+2, 4h+3)
    b[4 * h + 0] = _mm256_unpacklo_epi16(a[r], a[r + 2]);
    b[4 * h + 1] = _mm256_unpackhi_epi16(a[r], a[r + 2]);
    b[4 * h + 2] = _mm256_unpacklo_epi16(a[r + 1], a[r + 3]);
    b[4 * h + 3] = _mm256_unpackhi_epi16(a[r + 1], a[r + 3]);
  }
  for (int q = 0; q < 4; ++q) {  // bytes 4q..4q+3 of rows 0-7
    const __m256i lo = _mm256_unpacklo_epi32(b[q], b[4 + q]);  // bytes 4q, 4q+1
    const __m256i hi = _mm256_unpackhi_epi32(b[q], b[4 + q]);  // bytes 4q+2, 4q+3
    y[2 * q] = _mm256_permute4x64_epi64(lo, 0xD8);             // quarters 0, 2, 1, 3
    y[2 * q + 1] = _mm256_permute4x64_epi64(hi, 0xD8);
  }
}

}  // namespace

void attn_scores_lut_avx2(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                          int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t,
                          int64_t rs, float mult, float* s, int64_t ss) {
  const int64_t chunks = P / 32;
  const __m256i nib = _mm256_set1_epi8(15), low16 = _mm256_set1_epi16(0xFF);
  const __m256 vmult = _mm256_set1_ps(mult);
  __m256i y[8 * 8];  // P <= 256: up to 8 chunks of 8 registers
  for (int64_t j0 = 0; j0 + 16 <= t; j0 += 16) {
    const uint8_t* c0 = codes + j0 * rs;
    for (int64_t ch = 0; ch < chunks; ++ch) transpose16(c0 + 16 * ch, rs, y + 8 * ch);
    uint16_t h[16];
    for (int j = 0; j < 16; ++j) std::memcpy(&h[j], scales + (j0 + j) * rs, 2);
    const __m256 f0 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), vmult);
    const __m256 f1 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 8))), vmult);
    for (int64_t r = 0; r < M; ++r) {
      const uint8_t* tr = tab + r * attn_lut_row_bytes(P);
      __m256i ev = _mm256_setzero_si256(), od = _mm256_setzero_si256();
      for (int64_t k = 0; k < 8 * chunks; ++k) {
        const __m256i tl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tr + 64 * k));
        const __m256i th = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tr + 64 * k + 32));
        const __m256i lo = _mm256_and_si256(y[k], nib);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(y[k], 4), nib);
        const __m256i v1 = _mm256_shuffle_epi8(tl, lo), v2 = _mm256_shuffle_epi8(th, hi);
        ev = _mm256_add_epi16(ev, _mm256_add_epi16(_mm256_and_si256(v1, low16), _mm256_and_si256(v2, low16)));
        od = _mm256_add_epi16(od, _mm256_add_epi16(_mm256_srli_epi16(v1, 8), _mm256_srli_epi16(v2, 8)));
      }
      // Both lanes hold the same rows (different pairs): add them; then rows in order.
      const __m128i e = _mm_add_epi16(_mm256_castsi256_si128(ev), _mm256_extracti128_si256(ev, 1));
      const __m128i o = _mm_add_epi16(_mm256_castsi256_si128(od), _mm256_extracti128_si256(od, 1));
      const __m256 u0 = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_unpacklo_epi16(e, o)));
      const __m256 u1 = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_unpackhi_epi16(e, o)));
      const __m256 d = _mm256_set1_ps(delta[r]), b = _mm256_set1_ps(bias[r]);
      float* sr = s + r * ss + j0;
      _mm256_storeu_ps(sr, _mm256_mul_ps(_mm256_fmadd_ps(d, u0, b), f0));
      _mm256_storeu_ps(sr + 8, _mm256_mul_ps(_mm256_fmadd_ps(d, u1, b), f1));
    }
  }
}

}  // namespace aquakv::detail
