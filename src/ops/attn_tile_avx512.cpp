// AVX-512 (F) kernels of ops/attn_tile.h for few query rows (decode): the score product, the
// online-softmax update and the weighted value sum, with f32 or IEEE-half rows, hd % 16 == 0. Same math as the AVX2 loops
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
#include <cmath>
#include <cstdint>
#include <limits>

namespace aquakv::detail {
namespace {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// e^x for x <= 0, the AVX2 helper's method (avx2_math.h) on 16 lanes: x = n ln2 + r, degree-6
// Taylor polynomial of e^r (relative error < 1.4e-7), 2^n in the exponent bits; x < -87 clamps.
inline __m512 exp_neg(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
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
void attn_online_update_avx512(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                               float* a, int64_t hd) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < M; ++r) {
    float* sr = s + r * ss;
    float mx = m[r];
    {
      __m512 vm = _mm512_set1_ps(mx);
      int64_t j = 0;
      for (; j + 16 <= t; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(sr + j));
      if (j < t) vm = _mm512_mask_max_ps(vm, __mmask16((1u << (t - j)) - 1), vm, _mm512_maskz_loadu_ps(__mmask16((1u << (t - j)) - 1), sr + j));
      mx = _mm512_reduce_max_ps(vm);
    }
    if (mx == kNegInf) {
      std::fill(sr, sr + t, 0.0f);
      continue;
    }
    const float alpha = m[r] == kNegInf ? 0.0f : std::exp(m[r] - mx);
    const __m512 vmx = _mm512_set1_ps(mx), ninf = _mm512_set1_ps(kNegInf);
    __m512 vs = _mm512_setzero_ps();
    for (int64_t j = 0; j < t; j += 16) {
      const __mmask16 k = t - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (t - j)) - 1);
      const __m512 x = _mm512_maskz_loadu_ps(k, sr + j);
      // Masked (-inf) scores give exactly 0.
      const __mmask16 live = _mm512_mask_cmp_ps_mask(k, x, ninf, _CMP_NEQ_OQ);
      const __m512 e = _mm512_maskz_mov_ps(live, exp_neg(_mm512_sub_ps(x, vmx)));
      _mm512_mask_storeu_ps(sr + j, k, e);
      vs = _mm512_add_ps(vs, e);
    }
    const float sum = _mm512_reduce_add_ps(vs);
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t c = 0; c < hd; c += 16) _mm512_storeu_ps(a + r * hd + c, _mm512_mul_ps(va, _mm512_loadu_ps(a + r * hd + c)));
    l[r] = l[r] * alpha + sum;
    m[r] = mx;
  }
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
