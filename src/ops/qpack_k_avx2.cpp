// AVX2+FMA kernels for the packed K-quants (layouts and arithmetic in qpack_k.cpp): a 16-row
// group as two halves of 8 rows, one 256-bit lane per row, up to 2 activation vectors per pass.
// Integer sums by maddubs + madd: Q4_K codes <= 15 allow 8 products per 16-bit lane (<= 30,480),
// Q5_K codes <= 31 allow 4 (<= 31,496);
// Q6_K codes <= 63 allow 2 (<= 32,004), so its pair sums are widened two chunks at a time.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "avx2_math.h"
#include "qpack_k.h"
#include "qpack_layout.h"

namespace aquakv::detail {
namespace {

inline __m256i bcast4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm256_set1_epi32(v);
}
inline __m128i load8(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
inline __m256 bytes_u8(const uint8_t* p) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(load8(p))); }
inline __m256 bytes_i8(const uint8_t* p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(p))); }
inline __m256 halves(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256 neg(__m256 v) {
  return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(v), _mm256_set1_epi32(int32_t(0x80000000u))));
}


// Q4_K, and Q5_K (kQ5: fifth bits; codes <= 31 allow 4 products per 16-bit lane, so the 8
// chunks are widened in two groups of 4).
template <int G, bool kQ5>
void q4k_half(const uint8_t* base, int h8, int64_t nsb, const Q8Act* const* xs, float* const* outs) {
  __m256 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* blk = base + sb * kPackRows * (kQ5 ? 180 : 148);
    if (h8 == 0) prefetch_block(blk, kPackRows * (kQ5 ? 180 : 148));  // the second half reads it from cache
    const __m256 d = halves(blk + 16 * h8), dmin = halves(blk + 32 + 16 * h8);
    for (int j = 0; j < 8; ++j) {
      const int p = j / 2, h = j % 2;
      __m256i code[8];
      for (int c = 0; c < 8; ++c) {
        const __m256i v = load32(blk + 320 + 512 * p + 64 * c + 32 * h8);
        code[c] = _mm256_and_si256(h ? _mm256_srli_epi16(v, 4) : v, low4);
        if constexpr (kQ5) {
          const uint32_t fifth = uint32_t(load_u64(blk + kQ5KMasks + 64 * j + 8 * c) >> (32 * h8));
          code[c] = _mm256_or_si256(code[c], bits_to_16s_avx2(fifth));
        }
      }
      const __m256 d1 = _mm256_mul_ps(d, bytes_u8(blk + 64 + 16 * j + 8 * h8));
      const __m256 nm1 = neg(_mm256_mul_ps(dmin, bytes_u8(blk + 192 + 16 * j + 8 * h8)));
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][8 * sb + j];
        __m256i s0 = _mm256_maddubs_epi16(code[0], bcast4(a.q));
        __m256i s1 = _mm256_maddubs_epi16(code[4], bcast4(a.q + 16));
        for (int c = 1; c < 4; ++c) {
          s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(code[c], bcast4(a.q + 4 * c)));
          s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(code[4 + c], bcast4(a.q + 16 + 4 * c)));
        }
        __m256i is;
        if constexpr (kQ5) {
          is = _mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones));
        } else {
          is = _mm256_madd_epi16(_mm256_add_epi16(s0, s1), ones);
        }
        const __m256 f = _mm256_cvtepi32_ps(is);
        acc[g] = _mm256_fmadd_ps(f, _mm256_mul_ps(d1, _mm256_set1_ps(a.d)), acc[g]);
        accm[g] = _mm256_fmadd_ps(nm1, _mm256_set1_ps(a.s), accm[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_ps(outs[g], _mm256_add_ps(acc[g], accm[g]));
}

template <int G>
void q6k_half(const uint8_t* base, int h8, int64_t nsb, const Q8Act* const* xs, const int32_t* const* corr,
              float* const* outs) {
  __m256 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* blk = base + sb * kPackRows * 210;
    if (h8 == 0) prefetch_block(blk, kPackRows * 210);
    const __m256 d = halves(blk + 16 * h8);
    for (int s = 0; s < 8; ++s) {
      const uint8_t* sbk = blk + 288 + 384 * s;
      const __m256i hb[2] = {load32(sbk + 256 + 32 * h8), load32(sbk + 320 + 32 * h8)};
      __m256i code[8];
      for (int jj = 0; jj < 4; ++jj) {
        const __m256i v = load32(sbk + 64 * jj + 32 * h8);
        for (int h = 0; h < 2; ++h) {
          const int u = 2 * jj + h;
          const __m256i nib = _mm256_and_si256(h ? _mm256_srli_epi16(v, 4) : v, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb[u / 4], 2 * (u % 4)), three);
          code[u] = _mm256_or_si256(nib, _mm256_slli_epi16(hi, 4));
        }
      }
      const __m256 d10 = _mm256_mul_ps(d, bytes_i8(blk + 32 + 16 * (2 * s) + 8 * h8));
      const __m256 d11 = _mm256_mul_ps(d, bytes_i8(blk + 32 + 16 * (2 * s + 1) + 8 * h8));
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][8 * sb + s];
        const int32_t* cr = corr[g] + 2 * (8 * sb + s);
        __m256i is[2];
        for (int h = 0; h < 2; ++h) {
          const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(code[h], bcast4(a.q + 16 * h)),
                                               _mm256_maddubs_epi16(code[2 + h], bcast4(a.q + 16 * h + 4)));
          const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(code[4 + h], bcast4(a.q + 16 * h + 8)),
                                               _mm256_maddubs_epi16(code[6 + h], bcast4(a.q + 16 * h + 12)));
          is[h] = _mm256_sub_epi32(_mm256_add_epi32(_mm256_madd_epi16(p01, ones), _mm256_madd_epi16(p23, ones)),
                                   _mm256_set1_epi32(cr[h]));
        }
        const __m256 ad = _mm256_set1_ps(a.d);
        acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[0]), _mm256_mul_ps(d10, ad), acc[g]);
        acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[1]), _mm256_mul_ps(d11, ad), acc[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_ps(outs[g], _mm256_add_ps(acc[g], accm[g]));
}

}  // namespace

void qpack_dot_k_avx2(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                      const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  AQUAKV_CHECK(qpack_is_k(type), "qpack k avx2: not a packed K-quant");
  const int64_t nsb = cols / 256, nb = cols / 32, gbytes = kPackRows * nsb * qpack_k_packed_block(type);
  thread_local std::vector<int32_t> corr;
  if (type == GgmlType::Q6_K) code_sums(x, n_act * nb, 2, 32, corr);
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* base = packed + grp * gbytes;
    for (int h8 = 0; h8 < 2; ++h8) {
      for (int64_t t = 0; t < n_act; t += 2) {
        const int m = int(std::min<int64_t>(2, n_act - t));
        const Q8Act* xs[2] = {x + t * nb, x + (t + m - 1) * nb};
        const int32_t* cs[2] = {nullptr, nullptr};
        if (type == GgmlType::Q6_K) cs[0] = corr.data() + 2 * t * nb, cs[1] = corr.data() + 2 * (t + m - 1) * nb;
        float* outs[2] = {out + t * out_stride + grp * kPackRows + 8 * h8,
                          out + (t + m - 1) * out_stride + grp * kPackRows + 8 * h8};
        if (type == GgmlType::Q4_K) {
          if (m == 2) q4k_half<2, false>(base, h8, nsb, xs, outs); else q4k_half<1, false>(base, h8, nsb, xs, outs);
        } else if (type == GgmlType::Q5_K) {
          if (m == 2) q4k_half<2, true>(base, h8, nsb, xs, outs); else q4k_half<1, true>(base, h8, nsb, xs, outs);
        } else {
          if (m == 2) q6k_half<2>(base, h8, nsb, xs, cs, outs); else q6k_half<1>(base, h8, nsb, xs, cs, outs);
        }
      }
    }
  }
}

}  // namespace aquakv::detail
