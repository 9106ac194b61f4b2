// AVX2+FMA+F16C kernels of ops/attn_tile.h for few query rows (decode). hd % 8 == 0. Each key or
// value row is loaded once (converted from fp16 in registers) and used by all M query rows, so a
// KV head's row is read once per step for all the query heads of its group.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "avx2_math.h"

namespace aquakv::detail {
namespace {

constexpr int kMaxRows = 16;  // callers pass M < 16 (sgemm above that)

inline __m256 load(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
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
    for (int64_t r = 0; r < M; ++r) s[r * ss + j] = hsum_avx2(acc[r]);
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
      mx = hmax_avx2(vm);
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
      const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(x, ninf, _CMP_EQ_OQ), exp_neg_avx2(_mm256_sub_ps(x, vmx)));
      _mm256_storeu_ps(sr + j, e);
      vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum_avx2(vs);
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
