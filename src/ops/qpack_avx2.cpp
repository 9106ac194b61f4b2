// AVX2+FMA kernel of ops/qpack.h: a 16-row group is two halves of 8 rows, one 256-bit lane per
// row. Per block: maddubs of each 32-byte code half-chunk (4 codes of each of 8 rows) against
// the activation's matching 4 bytes broadcast gives 16-bit pair sums, madd by ones makes them
// the row's int32 sum (exact). Q4: 8 products of |code| <= 15 by |q| <= 127 per 16-bit lane
// (<= 30,480) are added before the madd; Q8_0: signed codes through maddubs(|c|, sign(q, c)),
// |c| <= 128, one madd per chunk. Then the same float steps as the scalar reference.
#include <immintrin.h>

#include <algorithm>
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


// Rows 8h..8h+7 of one block: f16 scales dw, offsets mv (Q4/Q5) and the codes unpacked to
// bytes, lo[j] / hi[j] = codes 4j..4j+3 / 16+4j..16+4j+3 of each row (Q5: fifth bit added).
template <GgmlType T>
struct HalfBlock {
  __m256 dw, mv;
  __m256i lo[4], hi[4];
};

template <GgmlType T>
inline void load_half(const uint8_t* blk, int h, HalfBlock<T>& hb) {
  using Gm = Geo<T>;
  hb.dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * h)));
  if constexpr (Gm::kQ8) return;
  if constexpr (Gm::kMin) {
    hb.mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * h)));
  } else {
    hb.mv = _mm256_mul_ps(hb.dw, _mm256_set1_ps(Gm::kOffset));
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const uint8_t* codes = blk + Gm::kHdr + 32 * h;
  for (int j = 0; j < 4; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j));
    hb.lo[j] = _mm256_and_si256(v, low4);
    hb.hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    if constexpr (Gm::kQ5) {  // + 16 where the fifth bit is set (rows 8h..8h+7: bits 32h..)
      const uint8_t* mk = blk + Gm::kMaskOff + 16 * j;
      hb.lo[j] = _mm256_or_si256(hb.lo[j], bits_to_16s_avx2(uint32_t(load_u64(mk) >> (32 * h))));
      hb.hi[j] = _mm256_or_si256(hb.hi[j], bits_to_16s_avx2(uint32_t(load_u64(mk + 8) >> (32 * h))));
    }
  }
}

// Exact int32 sum of codes x q for each of the 8 rows (Q4 / Q5 codes unpacked in hb).
template <GgmlType T>
inline __m256i q4_sums(const HalfBlock<T>& hb, const Q8Act& a) {
  const __m256i ones = _mm256_set1_epi16(1);
  // 16-bit pair sums: Q4 codes <= 15 allow all 8 products per lane (<= 30,480); Q5 codes
  // <= 31 allow 4 (<= 31,496), so low and high halves are widened separately.
  __m256i p = _mm256_maddubs_epi16(hb.lo[0], bcast4(a.q));
  __m256i ph = _mm256_maddubs_epi16(hb.hi[0], bcast4(a.q + 16));
  for (int j = 1; j < 4; ++j) {
    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(hb.lo[j], bcast4(a.q + 4 * j)));
    ph = _mm256_add_epi16(ph, _mm256_maddubs_epi16(hb.hi[j], bcast4(a.q + 16 + 4 * j)));
  }
  if constexpr (Geo<T>::kQ5) return _mm256_add_epi32(_mm256_madd_epi16(p, ones), _mm256_madd_epi16(ph, ones));
  return _mm256_madd_epi16(_mm256_add_epi16(p, ph), ones);
}

// Exact int32 sum of codes x q for rows 8h..8h+7 of a Q8_0 block (codes stored with 128 added).
inline __m256i q8_sums(const uint8_t* blk, int h, const Q8Act& a) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(int8_t(0x80));
  const uint8_t* codes = blk + Geo<GgmlType::Q8_0>::kHdr + 32 * h;
  __m256i is = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    const __m256i c = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 64 * j)), flip);
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(bcast4(a.q + 4 * j), c));
    is = _mm256_add_epi32(is, _mm256_madd_epi16(p, ones));
  }
  return is;
}

// acc += sum * dw * d; accm += mv * s (Q4/Q5): the scalar reference's float steps.
template <GgmlType T>
inline void accumulate(const uint8_t* blk, int h, const HalfBlock<T>& hb, const Q8Act& a, __m256& acc, __m256& accm) {
  const __m256i is = [&] {
    if constexpr (Geo<T>::kQ8) return q8_sums(blk, h, a);
    else return q4_sums(hb, a);
  }();
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(hb.dw, _mm256_set1_ps(a.d)), acc);
  if constexpr (!Geo<T>::kQ8) accm = _mm256_fmadd_ps(hb.mv, _mm256_set1_ps(a.s), accm);
}

// Rows 8h..8h+7 of one group times G activation vectors; outs[g] receives 8 floats. Each
// block's codes are unpacked once for the G vectors.
template <GgmlType T, int G>
void half_dot(const uint8_t* base, int h, int64_t nb, const Q8Act* const* xs, float* const* outs) {
  __m256 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm256_setzero_ps();
  HalfBlock<T> hb;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * kPackRows * Geo<T>::kRowBlock;
    load_half(blk, h, hb);
    for (int g = 0; g < G; ++g) accumulate(blk, h, hb, xs[g][b], acc[g], accm[g]);
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_ps(outs[g], _mm256_add_ps(acc[g], accm[g]));
}

// One activation vector, both halves of a group in one pass over its blocks, so each block's
// cache lines are consumed whole as they arrive (two passes of one half each read every line
// twice: once from memory, once from L1) and the next blocks can be prefetched while these are
// computed. Same integer sums and float steps per row as half_dot<T, 1>: bit-identical.
template <GgmlType T>
void group_dot1(const uint8_t* base, int64_t nb, const Q8Act* x, float* out) {
  constexpr int64_t kBlk = kPackRows * Geo<T>::kRowBlock;
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  __m256 accm[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  HalfBlock<T> hb;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * kBlk;
    prefetch_block(blk, kBlk);
    for (int h = 0; h < 2; ++h) {
      load_half(blk, h, hb);
      accumulate(blk, h, hb, x[b], acc[h], accm[h]);
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
    if (n_act == 1) {
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
