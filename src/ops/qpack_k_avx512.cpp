// AVX-512 (F, BW, VL, VNNI) kernels for the packed K-quants (layouts and arithmetic in
// qpack_k.cpp): one 512-bit lane per row of a 16-row group, up to 4 activation vectors per pass.
// Compiled with -ffp-contract=off; the explicit fmadds mirror the reference's std::fma.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>
#include <vector>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "qpack_k.h"
#include "qpack_layout.h"

namespace aquakv::detail {
namespace {

inline __m512i bcast4(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm512_set1_epi32(v);
}
inline __m512 bytes_u8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 bytes_i8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 halves(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
// Exact negation (sign flip), as the reference's unary minus.
inline __m512 neg(__m512 v) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int32_t(0x80000000u))));
}


// Q4_K, and Q5_K (kQ5: + 16 where the fifth bit is set, one masked byte add per code vector).
template <int G, bool kQ5>
void q4k_group(const uint8_t* base, int64_t nsb, const Q8Act* const* xs, float* const* outs) {
  __m512 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* blk = base + sb * kPackRows * (kQ5 ? 180 : 148);
    prefetch_block(blk, kPackRows * (kQ5 ? 180 : 148));
    const __m512 d = halves(blk), dmin = halves(blk + 32);
    for (int p = 0; p < 4; ++p) {
      __m512i v[8];
      for (int c = 0; c < 8; ++c) v[c] = _mm512_loadu_si512(blk + 320 + 512 * p + 64 * c);
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * p + h;
        __m512i code[8];
        for (int c = 0; c < 8; ++c) {
          code[c] = _mm512_and_si512(h ? _mm512_srli_epi16(v[c], 4) : v[c], low4);
          if constexpr (kQ5) {
            const __mmask64 fifth = _cvtu64_mask64(load_u64(blk + kQ5KMasks + 64 * j + 8 * c));
            code[c] = _mm512_mask_add_epi8(code[c], fifth, code[c], _mm512_set1_epi8(16));
          }
        }
        const __m512 d1 = _mm512_mul_ps(d, bytes_u8(blk + 64 + 16 * j));
        const __m512 nm1 = neg(_mm512_mul_ps(dmin, bytes_u8(blk + 192 + 16 * j)));
        for (int g = 0; g < G; ++g) {
          const Q8Act& a = xs[g][8 * sb + j];
          __m512i i0 = _mm512_dpbusd_epi32(zero, code[0], bcast4(a.q));
          __m512i i1 = _mm512_dpbusd_epi32(zero, code[1], bcast4(a.q + 4));
          for (int c = 2; c < 8; c += 2) {
            i0 = _mm512_dpbusd_epi32(i0, code[c], bcast4(a.q + 4 * c));
            i1 = _mm512_dpbusd_epi32(i1, code[c + 1], bcast4(a.q + 4 * c + 4));
          }
          const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1));
          acc[g] = _mm512_fmadd_ps(f, _mm512_mul_ps(d1, _mm512_set1_ps(a.d)), acc[g]);
          accm[g] = _mm512_fmadd_ps(nm1, _mm512_set1_ps(a.s), accm[g]);
        }
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm512_storeu_ps(outs[g], _mm512_add_ps(acc[g], accm[g]));
}

// corr[g][2*block + h] = 32 * (sum of the activation block's 16 codes of half h).
template <int G>
void q6k_group(const uint8_t* base, int64_t nsb, const Q8Act* const* xs, const int32_t* const* corr,
               float* const* outs) {
  __m512 acc[G], accm[G];
  for (int g = 0; g < G; ++g) acc[g] = accm[g] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f), three = _mm512_set1_epi8(3), zero = _mm512_setzero_si512();
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* blk = base + sb * kPackRows * 210;
    prefetch_block(blk, kPackRows * 210);
    const __m512 d = halves(blk);
    for (int s = 0; s < 8; ++s) {
      const uint8_t* sbk = blk + 288 + 384 * s;
      const __m512i hb[2] = {_mm512_loadu_si512(sbk + 256), _mm512_loadu_si512(sbk + 320)};
      __m512i code[8];  // u = 2*jj + h
      for (int jj = 0; jj < 4; ++jj) {
        const __m512i v = _mm512_loadu_si512(sbk + 64 * jj);
        for (int h = 0; h < 2; ++h) {
          const int u = 2 * jj + h;
          const __m512i nib = _mm512_and_si512(h ? _mm512_srli_epi16(v, 4) : v, low4);
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(hb[u / 4], 2 * (u % 4)), three);
          code[u] = _mm512_or_si512(nib, _mm512_slli_epi16(hi, 4));
        }
      }
      const __m512 d10 = _mm512_mul_ps(d, bytes_i8(blk + 32 + 16 * (2 * s)));
      const __m512 d11 = _mm512_mul_ps(d, bytes_i8(blk + 32 + 16 * (2 * s + 1)));
      for (int g = 0; g < G; ++g) {
        const Q8Act& a = xs[g][8 * sb + s];
        const int32_t* cr = corr[g] + 2 * (8 * sb + s);
        __m512i i0 = _mm512_dpbusd_epi32(zero, code[0], bcast4(a.q));
        __m512i i1 = _mm512_dpbusd_epi32(zero, code[1], bcast4(a.q + 16));
        for (int jj = 1; jj < 4; ++jj) {
          i0 = _mm512_dpbusd_epi32(i0, code[2 * jj], bcast4(a.q + 4 * jj));
          i1 = _mm512_dpbusd_epi32(i1, code[2 * jj + 1], bcast4(a.q + 16 + 4 * jj));
        }
        const __m512 ad = _mm512_set1_ps(a.d);
        const __m512 f0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(i0, _mm512_set1_epi32(cr[0])));
        const __m512 f1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(i1, _mm512_set1_epi32(cr[1])));
        acc[g] = _mm512_fmadd_ps(f0, _mm512_mul_ps(d10, ad), acc[g]);
        acc[g] = _mm512_fmadd_ps(f1, _mm512_mul_ps(d11, ad), acc[g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) _mm512_storeu_ps(outs[g], _mm512_add_ps(acc[g], accm[g]));
}

template <int G>
void run(GgmlType type, const uint8_t* base, int64_t nsb, const Q8Act* const* xs, const int32_t* const* cs,
         float* const* outs) {
  if (type == GgmlType::Q4_K) {
    q4k_group<G, false>(base, nsb, xs, outs);
  } else if (type == GgmlType::Q5_K) {
    q4k_group<G, true>(base, nsb, xs, outs);
  } else {
    q6k_group<G>(base, nsb, xs, cs, outs);
  }
}

}  // namespace

void qpack_dot_k_avx512(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                        const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  AQUAKV_CHECK(qpack_is_k(type), "qpack k avx512: not a packed K-quant");
  const int64_t nsb = cols / 256, nb = cols / 32, gbytes = kPackRows * nsb * qpack_k_packed_block(type);
  thread_local std::vector<int32_t> corr;
  if (type == GgmlType::Q6_K) code_sums(x, n_act * nb, 2, 32, corr);
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* base = packed + grp * gbytes;
    for (int64_t t = 0; t < n_act; t += 4) {
      const int m = int(std::min<int64_t>(4, n_act - t));
      const Q8Act* xs[4];
      const int32_t* cs[4] = {nullptr, nullptr, nullptr, nullptr};
      float* outs[4];
      for (int g = 0; g < m; ++g) {
        xs[g] = x + (t + g) * nb;
        if (type == GgmlType::Q6_K) cs[g] = corr.data() + 2 * (t + g) * nb;
        outs[g] = out + (t + g) * out_stride + grp * kPackRows;
      }
      switch (m) {
        case 4: run<4>(type, base, nsb, xs, cs, outs); break;
        case 3: run<3>(type, base, nsb, xs, cs, outs); break;
        case 2: run<2>(type, base, nsb, xs, cs, outs); break;
        default: run<1>(type, base, nsb, xs, cs, outs); break;
      }
    }
  }
}

}  // namespace aquakv::detail
