// AVX2+FMA kernel of ops/qpack.h: a 16-row group is two halves of 8 rows, one 256-bit lane per
// row. Per block: maddubs of each 32-byte code half-chunk (4 codes of each of 8 rows) against
// the activation's matching 4 bytes broadcast gives 16-bit pair sums, madd by ones makes them
// the row's int32 sum (exact). Q4: 8 products of |code| <= 15 by |q| <= 127 per 16-bit lane
// (<= 30,480) are added before the madd; Q8_0: signed codes through maddubs(|c|, sign(q, c)),
// |c| <= 128, one madd per chunk. Then the same float steps as the scalar reference.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "avx2_math.h"
#include "qpack_layout.h"

namespace aquakv::detail {
namespace {


inline __m256i bcast4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm256_set1_epi32(v);
}

template <GgmlType T>
using Geo = PackGeo<T>;

// Experiment switches (A/B in one binary; removed once decided).
const bool kQpackFused = [] { const char* e = std::getenv("AQUAKV_QFUSED"); return !e || e[0] != '0'; }();

// Rows 8h..8h+7 of one group times G activation vectors; outs[g] receives 8 floats.
template <GgmlType T, int G>
void half_dot(const uint8_t* base, int h, int64_t nb, const Q8Act* const* xs, float* const* outs) {
  using Gm = Geo<T>;
  __m256 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(int8_t(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * kPackRows * Gm::kRowBlock;
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
    const uint8_t* codes = blk + Gm::kHdr + 32 * h;
    if constexpr (!Gm::kQ8) {
      __m256 mv;
      if constexpr (Gm::kMin) {
        mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * h)));
      } else {
        mv = _mm256_mul_ps(dw, _mm256_set1_ps(Gm::kOffset));
      }
      __m256i lo[4], hi[4];
      for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j));
        lo[j] = _mm256_and_si256(v, low4);
        hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        if constexpr (Gm::kQ5) {  // + 16 where the fifth bit is set (rows 8h..8h+7: bits 32h..)
          const uint8_t* mk = blk + Gm::kMaskOff + 16 * j;
          lo[j] = _mm256_or_si256(lo[j], bits_to_16s_avx2(uint32_t(load_u64(mk) >> (32 * h))));
          hi[j] = _mm256_or_si256(hi[j], bits_to_16s_avx2(uint32_t(load_u64(mk + 8) >> (32 * h))));
        }
      }
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][b];
        // 16-bit pair sums: Q4 codes <= 15 allow all 8 products per lane (<= 30,480); Q5 codes
        // <= 31 allow 4 (<= 31,496), so low and high halves are widened separately.
        __m256i p = _mm256_maddubs_epi16(lo[0], bcast4(a.q));
        __m256i ph = _mm256_maddubs_epi16(hi[0], bcast4(a.q + 16));
        for (int j = 1; j < 4; ++j) {
          p = _mm256_add_epi16(p, _mm256_maddubs_epi16(lo[j], bcast4(a.q + 4 * j)));
          ph = _mm256_add_epi16(ph, _mm256_maddubs_epi16(hi[j], bcast4(a.q + 16 + 4 * j)));
        }
        __m256i is;
        if constexpr (Gm::kQ5) {
          is = _mm256_add_epi32(_mm256_madd_epi16(p, ones), _mm256_madd_epi16(ph, ones));
        } else {
          is = _mm256_madd_epi16(_mm256_add_epi16(p, ph), ones);
        }
        const __m256 f = _mm256_cvtepi32_ps(is);
        acc[g] = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_set1_ps(a.d)), acc[g]);
        accm[g] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.s), accm[g]);
      }
    } else {
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][b];
        __m256i is = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
          const __m256i c = _mm256_xor_si256(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j)), flip);
          const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(bcast4(a.q + 4 * j), c));
          is = _mm256_add_epi32(is, _mm256_madd_epi16(p, ones));
        }
        acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dw, _mm256_set1_ps(a.d)), acc[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_ps(outs[g], _mm256_add_ps(acc[g], accm[g]));
}

// One activation vector, both halves of a group in one pass over its blocks, so each block's
// cache lines are consumed whole as they arrive (two passes of one half each read every line
// twice: once from memory, once from L1) and the next blocks can be prefetched while these are
// computed. Same integer sums and float steps per row as half_dot<T, 1>: bit-identical.
template <GgmlType T>
void group_dot1(const uint8_t* base, int64_t nb, const Q8Act* x, float* out) {
  using Gm = Geo<T>;
  constexpr int64_t kBlk = kPackRows * Gm::kRowBlock;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  __m256 accm[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(int8_t(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * kBlk;
    prefetch_block(blk, kBlk);
    const Q8Act& a = x[b];
    const __m256 da = _mm256_set1_ps(a.d);
    for (int h = 0; h < 2; ++h) {
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
      const uint8_t* codes = blk + Gm::kHdr + 32 * h;
      if constexpr (!Gm::kQ8) {
        __m256 mv;
        if constexpr (Gm::kMin) {
          mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * h)));
        } else {
          mv = _mm256_mul_ps(dw, _mm256_set1_ps(Gm::kOffset));
        }
        __m256i p = _mm256_setzero_si256(), ph = _mm256_setzero_si256();
        __m256i is;
        for (int j = 0; j < 4; ++j) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j));
          __m256i lo = _mm256_and_si256(v, low4);
          __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          if constexpr (Gm::kQ5) {
            const uint8_t* mk = blk + Gm::kMaskOff + 16 * j;
            lo = _mm256_or_si256(lo, bits_to_16s_avx2(uint32_t(load_u64(mk) >> (32 * h))));
            hi = _mm256_or_si256(hi, bits_to_16s_avx2(uint32_t(load_u64(mk + 8) >> (32 * h))));
          }
          const __m256i pl = _mm256_maddubs_epi16(lo, bcast4(a.q + 4 * j));
          const __m256i pu = _mm256_maddubs_epi16(hi, bcast4(a.q + 16 + 4 * j));
          p = j == 0 ? pl : _mm256_add_epi16(p, pl);
          ph = j == 0 ? pu : _mm256_add_epi16(ph, pu);
        }
        if constexpr (Gm::kQ5) {
          is = _mm256_add_epi32(_mm256_madd_epi16(p, ones), _mm256_madd_epi16(ph, ones));
        } else {
          is = _mm256_madd_epi16(_mm256_add_epi16(p, ph), ones);
        }
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dw, da), acc[h]);
        accm[h] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.s), accm[h]);
      } else {
        __m256i is = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
          const __m256i c = _mm256_xor_si256(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j)), flip);
          const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(bcast4(a.q + 4 * j), c));
          is = _mm256_add_epi32(is, _mm256_madd_epi16(p, ones));
        }
        acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dw, da), acc[h]);
      }
    }
  }
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(out + 8 * h, _mm256_add_ps(acc[h], accm[h]));
}

template <GgmlType T>
void dot_groups(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const Q8Act* x,
                int64_t n_act, float* out, int64_t out_stride) {
  const int64_t nb = cols / 32, gbytes = qpack_group_bytes(T, cols);
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* base = packed + grp * gbytes;
    if (n_act == 1 && kQpackFused) {
      group_dot1<T>(base, nb, x, out + grp * kPackRows);
      continue;
    }
    for (int h = 0; h < 2; ++h) {
      for (int64_t t = 0; t < n_act; t += 2) {
        const int m = int(std::min<int64_t>(2, n_act - t));
        const Q8Act* xs[2] = {x + t * nb, x + (t + m - 1) * nb};
        float* outs[2] = {out + t * out_stride + grp * kPackRows + 8 * h,
                          out + (t + m - 1) * out_stride + grp * kPackRows + 8 * h};
        if (m == 2) {
          half_dot<T, 2>(base, h, nb, xs, outs);
        } else {
          half_dot<T, 1>(base, h, nb, xs, outs);
        }
      }
    }
  }
}

}  // namespace

void qpack_dot_avx2(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                    const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  switch (type) {
    case GgmlType::Q4_0: return dot_groups<GgmlType::Q4_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q4_1: return dot_groups<GgmlType::Q4_1>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q5_0: return dot_groups<GgmlType::Q5_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q5_1: return dot_groups<GgmlType::Q5_1>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q8_0: return dot_groups<GgmlType::Q8_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    default: AQUAKV_CHECK(false, "qpack avx2: type without a packed layout");
  }
}

}  // namespace aquakv::detail
