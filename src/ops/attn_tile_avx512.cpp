// AVX-512 (F) kernels of ops/attn_tile.h for few query rows (decode): the score product and the
// weighted value sum, with f32 or IEEE-half rows, hd % 16 == 0. Same math as the AVX2 loops
// (attn_tile_avx2.cpp), 16 lanes wide and with the query-row count a template parameter, so the
// M accumulators live in registers (the AVX2 loops index a runtime-sized array).
//
// Scores: each key row is loaded once (hd/16 registers) and meets all M query rows (read from
// L1 as FMA operands); the M lane sums are reduced at the end of the row. Accumulation: R query
// rows x up to 4 registers of 16 output channels per pass, so each value register loaded from the
// tile feeds R FMAs.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstdint>

namespace aquakv::detail {
namespace {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <int M, typename T>
void scores_m(const float* q, int64_t hd, const T* k, int64_t t, int64_t ks, float* s, int64_t ss) {
  for (int64_t j = 0; j < t; ++j) {
    const T* kj = k + j * ks;
    __m512 acc[M];
    for (int r = 0; r < M; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < hd; c += 16) {
      const __m512 kv = load16(kj + c);
      for (int r = 0; r < M; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * hd + c), kv, acc[r]);
    }
    for (int r = 0; r < M; ++r) s[r * ss + j] = _mm512_reduce_add_ps(acc[r]);
  }
}

template <typename T>
void scores(const float* q, int64_t M, int64_t hd, const T* k, int64_t t, int64_t ks, float* s,
            int64_t ss) {
  // Rows in groups of at most 12 (12 accumulators + the key register stay in the 32 zmm).
  while (M > 0) {
    const int64_t m = std::min<int64_t>(M, 12);
    switch (m) {
#define AQUAKV_CASE(N) case N: scores_m<N>(q, hd, k, t, ks, s, ss); break;
      AQUAKV_CASE(1) AQUAKV_CASE(2) AQUAKV_CASE(3) AQUAKV_CASE(4) AQUAKV_CASE(5) AQUAKV_CASE(6)
      AQUAKV_CASE(7) AQUAKV_CASE(8) AQUAKV_CASE(9) AQUAKV_CASE(10) AQUAKV_CASE(11) AQUAKV_CASE(12)
#undef AQUAKV_CASE
      default: break;
    }
    q += m * hd;
    s += m * ss;
    M -= m;
  }
}

// a[r*as + c0 + ..] += sum_j p[r*ps + j] v[j*vs + c0 + ..] for R rows and W registers (16 lanes).
template <int R, int W, typename T>
void accum_rw(const float* p, int64_t t, int64_t ps, const T* v, int64_t vs, float* a, int64_t as) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < W; ++i) acc[r][i] = _mm512_loadu_ps(a + r * as + 16 * i);
  for (int64_t j = 0; j < t; ++j) {
    __m512 vj[W];
    for (int i = 0; i < W; ++i) vj[i] = load16(v + j * vs + 16 * i);
    for (int r = 0; r < R; ++r) {
      const __m512 pj = _mm512_set1_ps(p[r * ps + j]);
      for (int i = 0; i < W; ++i) acc[r][i] = _mm512_fmadd_ps(pj, vj[i], acc[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < W; ++i) _mm512_storeu_ps(a + r * as + 16 * i, acc[r][i]);
}

template <int W, typename T>
void accum_w(const float* p, int64_t M, int64_t t, int64_t ps, const T* v, int64_t vs, float* a,
             int64_t as) {
  int64_t r = 0;
  for (; r + 4 <= M; r += 4) accum_rw<4, W>(p + r * ps, t, ps, v, vs, a + r * as, as);
  switch (M - r) {
    case 3: accum_rw<3, W>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    case 2: accum_rw<2, W>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    case 1: accum_rw<1, W>(p + r * ps, t, ps, v, vs, a + r * as, as); break;
    default: break;
  }
}

template <typename T>
void accum(const float* p, int64_t M, int64_t t, int64_t ps, const T* v, int64_t vs, int64_t hd,
           float* a) {
  for (int64_t c0 = 0; c0 < hd; c0 += 64) {
    switch (std::min<int64_t>(64, hd - c0) / 16) {
      case 4: accum_w<4>(p, M, t, ps, v + c0, vs, a + c0, hd); break;
      case 3: accum_w<3>(p, M, t, ps, v + c0, vs, a + c0, hd); break;
      case 2: accum_w<2>(p, M, t, ps, v + c0, vs, a + c0, hd); break;
      case 1: accum_w<1>(p, M, t, ps, v + c0, vs, a + c0, hd); break;
      default: break;
    }
  }
}

}  // namespace

void attn_scores_avx512(const float* q, int64_t M, int64_t hd, const float* k, int64_t t,
                        int64_t ks, float* s, int64_t ss) {
  scores(q, M, hd, k, t, ks, s, ss);
}
void attn_scores_f16_avx512(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                            int64_t ks, float* s, int64_t ss) {
  scores(q, M, hd, k, t, ks, s, ss);
}
void attn_accum_avx512(const float* p, int64_t M, int64_t t, int64_t ps, const float* v,
                       int64_t vs, int64_t hd, float* a) {
  accum(p, M, t, ps, v, vs, hd, a);
}
void attn_accum_f16_avx512(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                           int64_t vs, int64_t hd, float* a) {
  accum(p, M, t, ps, v, vs, hd, a);
}

}  // namespace aquakv::detail
