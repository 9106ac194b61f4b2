// AVX-512 (F, BW) kernel of qpack_dequant_group (ops/qpack.h; reference and formulas in
// qpack_dequant.cpp). A packed unit of 32 values x 16 rows arrives as byte chunks of 64 B
// holding 4 codes of each row (dword r = row r): the codes are first formed as int8 in those
// chunks (nibble split, fifth bits added under a 64-bit mask, offsets subtracted), then a 4x4
// dword transpose inside each 128-bit lane gathers each row's 16 codes, which are widened to
// f32 and scaled. Compiled with -ffp-contract=off: multiply and add stay two roundings, as in
// the reference.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "qpack_k.h"
#include "qpack_layout.h"

namespace aquakv::detail {
namespace {

enum class Affine { kMul, kMulAdd, kMulSub };  // d*q, d*q + m, d*q - m

// v[m] becomes, in its 128-bit lane k, the 16 bytes of row 4k+m (the dwords of that row in
// v[0..3], in order).
inline void transpose4(__m512i v[4]) {
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  v[0] = _mm512_unpacklo_epi64(t0, t2);
  v[1] = _mm512_unpackhi_epi64(t0, t2);
  v[2] = _mm512_unpacklo_epi64(t1, t3);
  v[3] = _mm512_unpackhi_epi64(t1, t3);
}

// One unit: lo[j] / hi[j] hold int8 codes, byte 4r+i = code 4j+i (lo) or 16+4j+i (hi) of row
// r. Row r of out (stride ld) gets dlo[r]*q for values 0..15 and dhi[r]*q for 16..31, then
// + or - m[r] (Affine).
template <Affine A>
inline void store_unit(__m512i lo[4], __m512i hi[4], const float* dlo, const float* dhi,
                       const float* m, float* out, int64_t ld) {
  alignas(64) int8_t buf[2][256];
  transpose4(lo);
  transpose4(hi);
  for (int k = 0; k < 4; ++k) {
    _mm512_store_si512(buf[0] + 64 * k, lo[k]);
    _mm512_store_si512(buf[1] + 64 * k, hi[k]);
  }
  for (int r = 0; r < 16; ++r) {
    const int off = 64 * (r % 4) + 16 * (r / 4);
    float* o = out + r * ld;
    for (int h = 0; h < 2; ++h) {
      const __m128i q8 = _mm_load_si128(reinterpret_cast<const __m128i*>(buf[h] + off));
      const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8));
      __m512 x = _mm512_mul_ps(_mm512_set1_ps(h == 0 ? dlo[r] : dhi[r]), q);
      if constexpr (A == Affine::kMulAdd) x = _mm512_add_ps(x, _mm512_set1_ps(m[r]));
      if constexpr (A == Affine::kMulSub) x = _mm512_sub_ps(x, _mm512_set1_ps(m[r]));
      _mm512_storeu_ps(o + 16 * h, x);
    }
  }
}

inline __m512i load64(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline __m512 halves16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// 16 scale codes (one per row) as floats.
inline __m512 u8s16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 i8s16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <GgmlType T>
void dequant_32(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  using G = PackGeo<T>;
  const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
  alignas(64) float d[16], m[16];
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* blk = group + b * kPackRows * G::kRowBlock;
    const uint8_t* codes = blk + G::kHdr;
    _mm512_store_ps(d, halves16(blk));
    __m512i lo[4], hi[4];
    if constexpr (G::kQ8) {  // stored code + 128: flipping the top bit gives the int8 code
      const __m512i flip = _mm512_set1_epi8(int8_t(0x80));
      for (int j = 0; j < 4; ++j) {
        lo[j] = _mm512_xor_si512(load64(codes + 64 * j), flip);
        hi[j] = _mm512_xor_si512(load64(codes + 64 * (j + 4)), flip);
      }
      store_unit<Affine::kMul>(lo, hi, d, d, m, out + 32 * b, ld);
      continue;
    }
    for (int j = 0; j < 4; ++j) {
      const __m512i v = load64(codes + 64 * j);
      lo[j] = _mm512_and_si512(v, low4);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      if constexpr (G::kQ5) {
        const uint8_t* mk = blk + G::kMaskOff + 16 * j;
        lo[j] = _mm512_mask_add_epi8(lo[j], _cvtu64_mask64(load_u64(mk)), lo[j], sixteen);
        hi[j] = _mm512_mask_add_epi8(hi[j], _cvtu64_mask64(load_u64(mk + 8)), hi[j], sixteen);
      }
      if constexpr (!G::kMin) {  // q - 8 (Q4_0), q - 16 (Q5_0)
        const __m512i off = _mm512_set1_epi8(int8_t(-G::kOffset));
        lo[j] = _mm512_sub_epi8(lo[j], off);
        hi[j] = _mm512_sub_epi8(hi[j], off);
      }
    }
    if constexpr (G::kMin) {
      _mm512_store_ps(m, halves16(blk + 32));
      store_unit<Affine::kMulAdd>(lo, hi, d, d, m, out + 32 * b, ld);
    } else {
      store_unit<Affine::kMul>(lo, hi, d, d, m, out + 32 * b, ld);
    }
  }
}

template <bool kQ5>
void dequant_q45k(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = qpack_k_packed_block(kQ5 ? GgmlType::Q5_K : GgmlType::Q4_K);
  const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
  alignas(64) float d1[16], m1[16];
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    const __m512 d = halves16(blk), dmin = halves16(blk + 32);
    for (int j = 0; j < 8; ++j) {
      _mm512_store_ps(d1, _mm512_mul_ps(d, u8s16(blk + 64 + 16 * j)));
      _mm512_store_ps(m1, _mm512_mul_ps(dmin, u8s16(blk + 192 + 16 * j)));
      const uint8_t* codes = blk + 320 + 512 * (j / 2);
      __m512i q[8];
      for (int c = 0; c < 8; ++c) {
        const __m512i v = load64(codes + 64 * c);
        q[c] = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, low4);
        if constexpr (kQ5) {
          const uint64_t fifth = load_u64(blk + kQ5KMasks + 64 * j + 8 * c);
          q[c] = _mm512_mask_add_epi8(q[c], _cvtu64_mask64(fifth), q[c], sixteen);
        }
      }
      store_unit<Affine::kMulSub>(q, q + 4, d1, d1, m1, out + 256 * sb + 32 * j, ld);
    }
  }
}

void dequant_q6k(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = qpack_k_packed_block(GgmlType::Q6_K);
  const __m512i low4 = _mm512_set1_epi8(0x0f), top2 = _mm512_set1_epi8(0x30);
  const __m512i off = _mm512_set1_epi8(32);
  alignas(64) float dlo[16], dhi[16];
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    const __m512 d = halves16(blk);
    for (int s = 0; s < 8; ++s) {
      _mm512_store_ps(dlo, _mm512_mul_ps(d, i8s16(blk + 32 + 16 * (2 * s))));
      _mm512_store_ps(dhi, _mm512_mul_ps(d, i8s16(blk + 32 + 16 * (2 * s + 1))));
      const uint8_t* sbk = blk + 288 + 384 * s;
      const __m512i hb[2] = {load64(sbk + 256), load64(sbk + 320)};
      __m512i lo[4], hi[4];
      for (int jj = 0; jj < 4; ++jj) {
        // high bits of values 4jj+i at bits 4(jj%2), of 16+4jj+i at 4(jj%2)+2: moved to bits 4-5
        const __m512i v = load64(sbk + 64 * jj), h = hb[jj / 2];
        const __m512i hl = jj % 2 ? h : _mm512_slli_epi16(h, 4);
        const __m512i hh = jj % 2 ? _mm512_srli_epi16(h, 2) : _mm512_slli_epi16(h, 2);
        lo[jj] = _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(v, low4), _mm512_and_si512(hl, top2)), off);
        hi[jj] = _mm512_sub_epi8(
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), _mm512_and_si512(hh, top2)), off);
      }
      store_unit<Affine::kMul>(lo, hi, dlo, dhi, dlo, out + 256 * sb + 32 * s, ld);
    }
  }
}

}  // namespace

void qpack_dequant_group_avx512(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  switch (type) {
    case GgmlType::Q4_0: return dequant_32<GgmlType::Q4_0>(group, cols, out, ld);
    case GgmlType::Q4_1: return dequant_32<GgmlType::Q4_1>(group, cols, out, ld);
    case GgmlType::Q5_0: return dequant_32<GgmlType::Q5_0>(group, cols, out, ld);
    case GgmlType::Q5_1: return dequant_32<GgmlType::Q5_1>(group, cols, out, ld);
    case GgmlType::Q8_0: return dequant_32<GgmlType::Q8_0>(group, cols, out, ld);
    case GgmlType::Q4_K: return dequant_q45k<false>(group, cols, out, ld);
    case GgmlType::Q5_K: return dequant_q45k<true>(group, cols, out, ld);
    case GgmlType::Q6_K: return dequant_q6k(group, cols, out, ld);
    default: AQUAKV_CHECK(false, "qpack_dequant_group avx512: type without a packed layout");
  }
}

}  // namespace aquakv::detail
