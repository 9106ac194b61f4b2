// AVX2 kernel of qpack_dequant_group (ops/qpack.h; reference and formulas in
// qpack_dequant.cpp): the AVX-512 kernel's scheme on half a group at a time. A 64-byte chunk of
// a packed unit (4 codes of each of 16 rows) is two 256-bit registers of 8 rows; the codes are
// formed as int8 in place (nibble split, fifth bits, offsets), a 4x4 dword transpose inside each
// 128-bit lane gathers each row's 16 codes, and they are widened to f32 and scaled. Multiply and
// add stay two roundings (no contraction), as in the reference.
#include <immintrin.h>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "avx2_math.h"
#include "qpack_k.h"
#include "qpack_layout.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv::detail {
namespace {

enum class Affine { kMul, kMulAdd, kMulSub };  // d*q, d*q + m, d*q - m

// v[m] becomes, in its 128-bit lane k, the 16 bytes of row 4k+m of the 8 (the dwords of that
// row in v[0..3], in order).
inline void transpose4(__m256i v[4]) {
  const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
  v[0] = _mm256_unpacklo_epi64(t0, t2);
  v[1] = _mm256_unpackhi_epi64(t0, t2);
  v[2] = _mm256_unpacklo_epi64(t1, t3);
  v[3] = _mm256_unpackhi_epi64(t1, t3);
}

inline __m256 widen8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Half a unit (8 rows): lo[j] / hi[j] hold int8 codes, byte 4r+i = code 4j+i (lo) or 16+4j+i
// (hi) of row r of the half. Row r of out (stride ld) gets dlo[r]*q for values 0..15 and
// dhi[r]*q for 16..31, then + or - m[r] (Affine).
template <Affine A>
inline void store_half(__m256i lo[4], __m256i hi[4], const float* dlo, const float* dhi,
                       const float* m, float* out, int64_t ld) {
  alignas(32) int8_t buf[2][128];
  transpose4(lo);
  transpose4(hi);
  for (int k = 0; k < 4; ++k) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf[0] + 32 * k), lo[k]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(buf[1] + 32 * k), hi[k]);
  }
  for (int r = 0; r < 8; ++r) {
    const int off = 32 * (r % 4) + 16 * (r / 4);
    float* o = out + r * ld;
    for (int h = 0; h < 2; ++h) {
      const __m256 dv = _mm256_set1_ps(h == 0 ? dlo[r] : dhi[r]);
      for (int e = 0; e < 2; ++e) {
        __m256 x = _mm256_mul_ps(dv, widen8(buf[h] + off + 8 * e));
        if constexpr (A == Affine::kMulAdd) x = _mm256_add_ps(x, _mm256_set1_ps(m[r]));
        if constexpr (A == Affine::kMulSub) x = _mm256_sub_ps(x, _mm256_set1_ps(m[r]));
        _mm256_storeu_ps(o + 16 * h + 8 * e, x);
      }
    }
  }
}

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
// 16 f16 scales (one per row) into f[16].
inline void halves16(const uint8_t* p, float* f) {
  _mm256_store_ps(f, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  _mm256_store_ps(f + 8, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
}
// f[r] = a[r] * float(code r), 16 u8 (kSigned: i8) scale codes.
template <bool kSigned>
inline void scaled16(const float* a, const uint8_t* p, float* f) {
  for (int h = 0; h < 2; ++h) {
    const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * h));
    const __m256i w = kSigned ? _mm256_cvtepi8_epi32(c) : _mm256_cvtepu8_epi32(c);
    _mm256_store_ps(f + 8 * h, _mm256_mul_ps(_mm256_load_ps(a + 8 * h), _mm256_cvtepi32_ps(w)));
  }
}

template <GgmlType T>
void dequant_32(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  using G = PackGeo<T>;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  alignas(32) float d[16], m[16];
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* blk = group + b * kPackRows * G::kRowBlock;
    const uint8_t* codes = blk + G::kHdr;
    halves16(blk, d);
    if constexpr (G::kMin) halves16(blk + 32, m);
    for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h+7
      __m256i lo[4], hi[4];
      if constexpr (G::kQ8) {  // stored code + 128: flipping the top bit gives the int8 code
        const __m256i flip = _mm256_set1_epi8(int8_t(0x80));
        for (int j = 0; j < 4; ++j) {
          lo[j] = _mm256_xor_si256(load32(codes + 64 * j + 32 * h), flip);
          hi[j] = _mm256_xor_si256(load32(codes + 64 * (j + 4) + 32 * h), flip);
        }
      } else {
        for (int j = 0; j < 4; ++j) {
          const __m256i v = load32(codes + 64 * j + 32 * h);
          lo[j] = _mm256_and_si256(v, low4);
          hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          if constexpr (G::kQ5) {
            const uint8_t* mk = blk + G::kMaskOff + 16 * j;
            lo[j] = _mm256_or_si256(lo[j], bits_to_16s_avx2(uint32_t(load_u64(mk) >> (32 * h))));
            hi[j] = _mm256_or_si256(hi[j], bits_to_16s_avx2(uint32_t(load_u64(mk + 8) >> (32 * h))));
          }
          if constexpr (!G::kMin) {  // q - 8 (Q4_0), q - 16 (Q5_0)
            const __m256i off = _mm256_set1_epi8(int8_t(-G::kOffset));
            lo[j] = _mm256_sub_epi8(lo[j], off);
            hi[j] = _mm256_sub_epi8(hi[j], off);
          }
        }
      }
      float* o = out + 8 * h * ld + 32 * b;
      if constexpr (G::kMin) {
        store_half<Affine::kMulAdd>(lo, hi, d + 8 * h, d + 8 * h, m + 8 * h, o, ld);
      } else {
        store_half<Affine::kMul>(lo, hi, d + 8 * h, d + 8 * h, m + 8 * h, o, ld);
      }
    }
  }
}

template <bool kQ5>
void dequant_q45k(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = qpack_k_packed_block(kQ5 ? GgmlType::Q5_K : GgmlType::Q4_K);
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  alignas(32) float d[16], dmin[16], d1[16], m1[16];
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    halves16(blk, d);
    halves16(blk + 32, dmin);
    for (int j = 0; j < 8; ++j) {
      scaled16<false>(d, blk + 64 + 16 * j, d1);
      scaled16<false>(dmin, blk + 192 + 16 * j, m1);
      const uint8_t* codes = blk + 320 + 512 * (j / 2);
      for (int h = 0; h < 2; ++h) {
        __m256i q[8];
        for (int c = 0; c < 8; ++c) {
          const __m256i v = load32(codes + 64 * c + 32 * h);
          q[c] = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, low4);
          if constexpr (kQ5) {
            const uint64_t fifth = load_u64(blk + kQ5KMasks + 64 * j + 8 * c);
            q[c] = _mm256_or_si256(q[c], bits_to_16s_avx2(uint32_t(fifth >> (32 * h))));
          }
        }
        store_half<Affine::kMulSub>(q, q + 4, d1 + 8 * h, d1 + 8 * h, m1 + 8 * h,
                                    out + 8 * h * ld + 256 * sb + 32 * j, ld);
      }
    }
  }
}

void dequant_q6k(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = qpack_k_packed_block(GgmlType::Q6_K);
  const __m256i low4 = _mm256_set1_epi8(0x0f), top2 = _mm256_set1_epi8(0x30);
  const __m256i off = _mm256_set1_epi8(32);
  alignas(32) float d[16], dlo[16], dhi[16];
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    halves16(blk, d);
    for (int s = 0; s < 8; ++s) {
      scaled16<true>(d, blk + 32 + 16 * (2 * s), dlo);
      scaled16<true>(d, blk + 32 + 16 * (2 * s + 1), dhi);
      const uint8_t* sbk = blk + 288 + 384 * s;
      for (int h = 0; h < 2; ++h) {
        const __m256i hb[2] = {load32(sbk + 256 + 32 * h), load32(sbk + 320 + 32 * h)};
        __m256i lo[4], hi[4];
        for (int jj = 0; jj < 4; ++jj) {
          // high bits of values 4jj+i at bits 4(jj%2), of 16+4jj+i at 4(jj%2)+2: moved to bits 4-5
          const __m256i v = load32(sbk + 64 * jj + 32 * h), hbits = hb[jj / 2];
          const __m256i hl = jj % 2 ? hbits : _mm256_slli_epi16(hbits, 4);
          const __m256i hh = jj % 2 ? _mm256_srli_epi16(hbits, 2) : _mm256_slli_epi16(hbits, 2);
          lo[jj] = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(v, low4), _mm256_and_si256(hl, top2)), off);
          hi[jj] = _mm256_sub_epi8(
              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), _mm256_and_si256(hh, top2)), off);
        }
        store_half<Affine::kMul>(lo, hi, dlo + 8 * h, dhi + 8 * h, dlo + 8 * h,
                                 out + 8 * h * ld + 256 * sb + 32 * s, ld);
      }
    }
  }
}

}  // namespace

void qpack_dequant_group_avx2(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  switch (type) {
    case GgmlType::Q4_0: return dequant_32<GgmlType::Q4_0>(group, cols, out, ld);
    case GgmlType::Q4_1: return dequant_32<GgmlType::Q4_1>(group, cols, out, ld);
    case GgmlType::Q5_0: return dequant_32<GgmlType::Q5_0>(group, cols, out, ld);
    case GgmlType::Q5_1: return dequant_32<GgmlType::Q5_1>(group, cols, out, ld);
    case GgmlType::Q8_0: return dequant_32<GgmlType::Q8_0>(group, cols, out, ld);
    case GgmlType::Q4_K: return dequant_q45k<false>(group, cols, out, ld);
    case GgmlType::Q5_K: return dequant_q45k<true>(group, cols, out, ld);
    case GgmlType::Q6_K: return dequant_q6k(group, cols, out, ld);
    default: AQUAKV_CHECK(false, "qpack_dequant_group avx2: type without a packed layout");
  }
}

}  // namespace aquakv::detail
