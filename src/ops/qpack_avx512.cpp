// AVX-512 (F, BW, VL, VNNI) kernel of ops/qpack.h: one 512-bit lane per row of a 16-row group.
// Per block and activation vector: vpdpbusd of each 64-byte code chunk (4 codes of each row)
// against the activation's matching 4 bytes broadcast, so lane r sums row r's products exactly
// in int32; then one conversion and one fma with the block's 16 scales times the activation's d.
// Q8_0 codes are stored plus 128 (vpdpbusd multiplies unsigned by signed bytes); 128*sum(q) of
// the activation block is subtracted, exact. Up to 4 activation vectors share each code register.
// Compiled with -ffp-contract=off: the only fused operations are the explicit fmadds, which the
// scalar reference mirrors with std::fma.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "qpack_layout.h"

namespace aquakv::detail {
namespace {

inline __m512i bcast4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm512_set1_epi32(v);
}

template <GgmlType T>
using Geo = PackGeo<T>;
const bool kQpackPf512 = [] { const char* e = std::getenv("AQUAKV_QPF512"); return !e || e[0] != '0'; }();

// Rows of one group times G activation vectors; outs[g] receives 16 floats.
template <GgmlType T, int G>
void group_dot(const uint8_t* base, int64_t nb, const Q8Act* const* xs, const int32_t* const* corr,
               float* const* outs) {
  using Gm = Geo<T>;
  __m512 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * kPackRows * Gm::kRowBlock;
    if (kQpackPf512) prefetch_block(blk, kPackRows * Gm::kRowBlock);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    const uint8_t* codes = blk + Gm::kHdr;
    if constexpr (!Gm::kQ8) {
      __m512 mv;
      if constexpr (Gm::kMin) {
        mv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32)));
      } else {
        mv = _mm512_mul_ps(dw, _mm512_set1_ps(Gm::kOffset));
      }
      __m512i lo[4], hi[4];
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(codes + 64 * j);
        lo[j] = _mm512_and_si512(v, low4);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        if constexpr (Gm::kQ5) {  // + 16 where the fifth bit is set
          const __m512i sixteen = _mm512_set1_epi8(16);
          const uint8_t* mk = blk + Gm::kMaskOff + 16 * j;
          lo[j] = _mm512_mask_add_epi8(lo[j], _cvtu64_mask64(load_u64(mk)), lo[j], sixteen);
          hi[j] = _mm512_mask_add_epi8(hi[j], _cvtu64_mask64(load_u64(mk + 8)), hi[j], sixteen);
        }
      }
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][b];
        __m512i i0 = _mm512_dpbusd_epi32(zero, lo[0], bcast4(a.q));
        __m512i i1 = _mm512_dpbusd_epi32(zero, hi[0], bcast4(a.q + 16));
        for (int j = 1; j < 4; ++j) {
          i0 = _mm512_dpbusd_epi32(i0, lo[j], bcast4(a.q + 4 * j));
          i1 = _mm512_dpbusd_epi32(i1, hi[j], bcast4(a.q + 16 + 4 * j));
        }
        const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1));
        acc[g] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw, _mm512_set1_ps(a.d)), acc[g]);
        accm[g] = _mm512_fmadd_ps(mv, _mm512_set1_ps(a.s), accm[g]);
      }
    } else {
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][b];
        __m512i i0 = _mm512_dpbusd_epi32(zero, _mm512_loadu_si512(codes), bcast4(a.q));
        __m512i i1 = _mm512_dpbusd_epi32(zero, _mm512_loadu_si512(codes + 64), bcast4(a.q + 4));
        for (int j = 2; j < 8; j += 2) {
          i0 = _mm512_dpbusd_epi32(i0, _mm512_loadu_si512(codes + 64 * j), bcast4(a.q + 4 * j));
          i1 = _mm512_dpbusd_epi32(i1, _mm512_loadu_si512(codes + 64 * (j + 1)), bcast4(a.q + 4 * j + 4));
        }
        const __m512i is = _mm512_sub_epi32(_mm512_add_epi32(i0, i1), _mm512_set1_epi32(corr[g][b]));
        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(dw, _mm512_set1_ps(a.d)), acc[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm512_storeu_ps(outs[g], _mm512_add_ps(acc[g], accm[g]));
}

template <GgmlType T>
void dot_groups(const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1, const Q8Act* x,
                int64_t n_act, float* out, int64_t out_stride) {
  const int64_t nb = cols / 32, gbytes = qpack_group_bytes(T, cols);
  // Q8_0: 128 * sum(q) per activation block, once per call.
  thread_local std::vector<int32_t> corr;
  if constexpr (Geo<T>::kQ8) code_sums(x, n_act * nb, 1, 128, corr);
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* base = packed + grp * gbytes;
    for (int64_t t = 0; t < n_act; t += 4) {
      const int m = int(std::min<int64_t>(4, n_act - t));
      const Q8Act* xs[4];
      const int32_t* cs[4] = {nullptr, nullptr, nullptr, nullptr};
      float* outs[4];
      for (int g = 0; g < m; ++g) {
        xs[g] = x + (t + g) * nb;
        if constexpr (Geo<T>::kQ8) cs[g] = corr.data() + (t + g) * nb;
        outs[g] = out + (t + g) * out_stride + grp * kPackRows;
      }
      switch (m) {
        case 4: group_dot<T, 4>(base, nb, xs, cs, outs); break;
        case 3: group_dot<T, 3>(base, nb, xs, cs, outs); break;
        case 2: group_dot<T, 2>(base, nb, xs, cs, outs); break;
        default: group_dot<T, 1>(base, nb, xs, cs, outs); break;
      }
    }
  }
}

}  // namespace

void qpack_dot_avx512(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                      const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  switch (type) {
    case GgmlType::Q4_0: return dot_groups<GgmlType::Q4_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q4_1: return dot_groups<GgmlType::Q4_1>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q5_0: return dot_groups<GgmlType::Q5_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q5_1: return dot_groups<GgmlType::Q5_1>(packed, cols, g0, g1, x, n_act, out, out_stride);
    case GgmlType::Q8_0: return dot_groups<GgmlType::Q8_0>(packed, cols, g0, g1, x, n_act, out, out_stride);
    default: AQUAKV_CHECK(false, "qpack avx512: type without a packed layout");
  }
}

}  // namespace aquakv::detail
