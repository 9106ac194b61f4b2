// Scalar kernels and dispatch of ops/attn_tile.h. The dispatching entries use OpenBLAS sgemm for
// many query rows (prefill tiles, where it wins), and the AVX-512 (attn_tile_avx512.cpp), AVX2
// (attn_tile_avx2.cpp) or scalar loops for few rows (decode: one token's query heads).
#include "aquakv/ops/attn_tile.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace detail {
void attn_scores_avx2(const float* q, int64_t M, int64_t hd, const float* k, int64_t t, int64_t ks,
                      float* s, int64_t ss);
void attn_scores_f16_avx2(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                          int64_t ks, float* s, int64_t ss);
void attn_online_update_avx2(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                             float* a, int64_t hd);
void attn_accum_avx2(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                     int64_t hd, float* a);
void attn_accum_f16_avx2(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                         int64_t vs, int64_t hd, float* a);
void attn_scores_avx512(const float* q, int64_t M, int64_t hd, const float* k, int64_t t,
                        int64_t ks, float* s, int64_t ss);
void attn_scores_f16_avx512(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                            int64_t ks, float* s, int64_t ss);
void attn_accum_avx512(const float* p, int64_t M, int64_t t, int64_t ps, const float* v,
                       int64_t vs, int64_t hd, float* a);
void attn_online_update_avx512(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                               float* a, int64_t hd);
void attn_accum_f16_avx512(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                           int64_t vs, int64_t hd, float* a);
}  // namespace detail

namespace {
constexpr int64_t kGemmRows = 16;  // from this many query rows on, sgemm beats the loops
bool simd(int64_t hd) { return simd_level() >= SimdLevel::kAvx2 && hd % 8 == 0; }
bool simd512(int64_t hd) { return simd_level() >= SimdLevel::kAvx512 && hd % 16 == 0; }
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

void attn_scores_ref(const float* q, int64_t M, int64_t hd, const float* k, int64_t t,
                     int64_t ks, float* s, int64_t ss) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < t; ++j) {
      double d = 0;
      for (int64_t c = 0; c < hd; ++c) d += double(q[r * hd + c]) * double(k[j * ks + c]);
      s[r * ss + j] = float(d);
    }
}

void attn_scores_f16_ref(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                         int64_t ks, float* s, int64_t ss) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < t; ++j) {
      double d = 0;
      for (int64_t c = 0; c < hd; ++c) d += double(q[r * hd + c]) * double(fp16_to_fp32(k[j * ks + c]));
      s[r * ss + j] = float(d);
    }
}

void attn_online_update_ref(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                            float* a, int64_t hd) {
  for (int64_t r = 0; r < M; ++r) {
    float* sr = s + r * ss;
    float mx = m[r];
    for (int64_t j = 0; j < t; ++j) mx = std::max(mx, sr[j]);
    if (mx == kNegInf) {  // nothing visible yet
      std::fill(sr, sr + t, 0.0f);
      continue;
    }
    const float alpha = m[r] == kNegInf ? 0.0f : std::exp(m[r] - mx);
    double sum = 0;
    for (int64_t j = 0; j < t; ++j) {
      sr[j] = sr[j] == kNegInf ? 0.0f : std::exp(sr[j] - mx);
      sum += sr[j];
    }
    for (int64_t c = 0; c < hd; ++c) a[r * hd + c] *= alpha;
    l[r] = l[r] * alpha + float(sum);
    m[r] = mx;
  }
}

void attn_accum_ref(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                    int64_t hd, float* a) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < hd; ++c) {
      double d = 0;
      for (int64_t j = 0; j < t; ++j) d += double(p[r * ps + j]) * double(v[j * vs + c]);
      a[r * hd + c] += float(d);
    }
}

void attn_accum_f16_ref(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                        int64_t vs, int64_t hd, float* a) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < hd; ++c) {
      double d = 0;
      for (int64_t j = 0; j < t; ++j) d += double(p[r * ps + j]) * double(fp16_to_fp32(v[j * vs + c]));
      a[r * hd + c] += float(d);
    }
}

void attn_scores(const float* q, int64_t M, int64_t hd, const float* k, int64_t t, int64_t ks,
                 float* s, int64_t ss) {
  if (M >= kGemmRows) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(t), int(hd), 1.0f, q, int(hd),
                k, int(ks), 0.0f, s, int(ss));
  } else if (simd512(hd)) {
    detail::attn_scores_avx512(q, M, hd, k, t, ks, s, ss);
  } else if (simd(hd)) {
    detail::attn_scores_avx2(q, M, hd, k, t, ks, s, ss);
  } else {
    attn_scores_ref(q, M, hd, k, t, ks, s, ss);
  }
}

void attn_scores_f16(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                     int64_t ks, float* s, int64_t ss) {
  if (simd512(hd)) return detail::attn_scores_f16_avx512(q, M, hd, k, t, ks, s, ss);
  if (simd(hd)) return detail::attn_scores_f16_avx2(q, M, hd, k, t, ks, s, ss);
  attn_scores_f16_ref(q, M, hd, k, t, ks, s, ss);
}

void attn_online_update(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l, float* a,
                        int64_t hd) {
  if (simd512(hd)) return detail::attn_online_update_avx512(s, M, t, ss, m, l, a, hd);
  if (simd(hd)) return detail::attn_online_update_avx2(s, M, t, ss, m, l, a, hd);
  attn_online_update_ref(s, M, t, ss, m, l, a, hd);
}

void attn_accum(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                int64_t hd, float* a) {
  if (M >= kGemmRows) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(hd), int(t), 1.0f, p, int(ps),
                v, int(vs), 1.0f, a, int(hd));
  } else if (simd512(hd)) {
    detail::attn_accum_avx512(p, M, t, ps, v, vs, hd, a);
  } else if (simd(hd)) {
    detail::attn_accum_avx2(p, M, t, ps, v, vs, hd, a);
  } else {
    attn_accum_ref(p, M, t, ps, v, vs, hd, a);
  }
}

void attn_accum_f16(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                    int64_t vs, int64_t hd, float* a) {
  if (simd512(hd)) return detail::attn_accum_f16_avx512(p, M, t, ps, v, vs, hd, a);
  if (simd(hd)) return detail::attn_accum_f16_avx2(p, M, t, ps, v, vs, hd, a);
  attn_accum_f16_ref(p, M, t, ps, v, vs, hd, a);
}

// (m, l, a) and (m2, l2, a2) cover disjoint rows of the same queries: rescale both to the larger
// max and add.
void attn_merge(float* m, float* l, float* a, const float* m2, const float* l2, const float* a2,
                int64_t M, int64_t hd) {
  for (int64_t r = 0; r < M; ++r) {
    if (m2[r] == kNegInf) continue;
    const float mx = std::max(m[r], m2[r]);
    const float x1 = m[r] == kNegInf ? 0.0f : std::exp(m[r] - mx), x2 = std::exp(m2[r] - mx);
    for (int64_t c = 0; c < hd; ++c) a[r * hd + c] = a[r * hd + c] * x1 + a2[r * hd + c] * x2;
    l[r] = l[r] * x1 + l2[r] * x2;
    m[r] = mx;
  }
}

}  // namespace aquakv
