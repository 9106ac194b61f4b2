// AVX2+FMA+F16C kernels of ops/attn_tile.h for few query rows (decode). hd % 8 == 0. Each key or
// value row is loaded once (converted from fp16 in registers) and used by all M query rows, so a
// KV head's row is read once per step for all the query heads of its group.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace aquakv::detail {
namespace {

constexpr int kMaxRows = 16;  // callers pass M < 16 (sgemm above that)

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// e^x for x <= 0 (as in nn_avx2.cpp): degree-6 Taylor on the reduced argument, 2^n in the
// exponent bits; relative error < 2e-7. x = -inf gives 0 (clamped to -87 first, then e^-87 ~ 1.6e-38,
// flushed below by the caller's mask).
inline __m256 exp_neg(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

template <typename T>
void scores(const float* q, int64_t M, int64_t hd, const T* k, int64_t t, int64_t ks, float* s,
            int64_t ss) {
  for (int64_t j = 0; j < t; ++j) {
    const T* kj = k + j * ks;
    __m256 acc[kMaxRows];
    for (int64_t r = 0; r < M; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t c = 0; c < hd; c += 8) {
      const __m256 kv = load(kj + c);
      for (int64_t r = 0; r < M; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * hd + c), kv, acc[r]);
    }
    for (int64_t r = 0; r < M; ++r) s[r * ss + j] = hsum(acc[r]);
  }
}

// Output columns in blocks of 32 (4 registers) per row: a[r, c..c+32) += sum_j p[r][j] v[j, c..].
template <typename T>
void accum(const float* p, int64_t M, int64_t t, int64_t ps, const T* v, int64_t vs, int64_t hd,
           float* a) {
  for (int64_t c0 = 0; c0 < hd; c0 += 32) {
    const int64_t w = std::min<int64_t>(32, hd - c0) / 8;  // registers per row
    for (int64_t r = 0; r < M; ++r) {
      __m256 acc[4];
      for (int64_t i = 0; i < w; ++i) acc[i] = _mm256_loadu_ps(a + r * hd + c0 + 8 * i);
      for (int64_t j = 0; j < t; ++j) {
        const __m256 pj = _mm256_set1_ps(p[r * ps + j]);
        for (int64_t i = 0; i < w; ++i) acc[i] = _mm256_fmadd_ps(pj, load(v + j * vs + c0 + 8 * i), acc[i]);
      }
      for (int64_t i = 0; i < w; ++i) _mm256_storeu_ps(a + r * hd + c0 + 8 * i, acc[i]);
    }
  }
}

}  // namespace

void attn_scores_avx2(const float* q, int64_t M, int64_t hd, const float* k, int64_t t, int64_t ks,
                      float* s, int64_t ss) {
  scores(q, M, hd, k, t, ks, s, ss);
}
void attn_scores_f16_avx2(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                          int64_t ks, float* s, int64_t ss) {
  for (int64_t r0 = 0; r0 < M; r0 += kMaxRows)
    scores(q + r0 * hd, std::min<int64_t>(kMaxRows, M - r0), hd, k, t, ks, s + r0 * ss, ss);
}

void attn_online_update_avx2(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                             float* a, int64_t hd) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < M; ++r) {
    float* sr = s + r * ss;
    float mx = m[r];
    {
      __m256 vm = _mm256_set1_ps(mx);
      int64_t j = 0;
      for (; j + 8 <= t; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(sr + j));
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_movehdup_ps(h));
      mx = _mm_cvtss_f32(h);
      for (; j < t; ++j) mx = sr[j] > mx ? sr[j] : mx;
    }
    if (mx == kNegInf) {
      std::fill(sr, sr + t, 0.0f);
      continue;
    }
    const float alpha = m[r] == kNegInf ? 0.0f : std::exp(m[r] - mx);
    const __m256 vmx = _mm256_set1_ps(mx), ninf = _mm256_set1_ps(kNegInf);
    __m256 vs = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= t; j += 8) {
      const __m256 x = _mm256_loadu_ps(sr + j);
      // Masked (-inf) scores give exactly 0.
      const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(x, ninf, _CMP_EQ_OQ), exp_neg(_mm256_sub_ps(x, vmx)));
      _mm256_storeu_ps(sr + j, e);
      vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum(vs);
    for (; j < t; ++j) {
      sr[j] = sr[j] == kNegInf ? 0.0f : std::exp(sr[j] - mx);
      sum += sr[j];
    }
    const __m256 va = _mm256_set1_ps(alpha);
    for (int64_t c = 0; c < hd; c += 8) _mm256_storeu_ps(a + r * hd + c, _mm256_mul_ps(va, _mm256_loadu_ps(a + r * hd + c)));
    l[r] = l[r] * alpha + sum;
    m[r] = mx;
  }
}

void attn_accum_avx2(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                     int64_t hd, float* a) {
  accum(p, M, t, ps, v, vs, hd, a);
}
void attn_accum_f16_avx2(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                         int64_t vs, int64_t hd, float* a) {
  accum(p, M, t, ps, v, vs, hd, a);
}

}  // namespace aquakv::detail
