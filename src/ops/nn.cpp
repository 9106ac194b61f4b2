// Scalar kernels of ops/nn.h; softmax (the hot one in attention) and geglu (Gemma's feed-forward)
// dispatch to AVX2 (nn_avx2.cpp), RoPE to AVX2 / AVX-512.
#include "aquakv/ops/nn.h"

#include <algorithm>
#include <cmath>

#include "aquakv/util/cpu.h"
#include "aquakv/util/check.h"

namespace aquakv {
namespace detail {
void softmax_avx2(float* x, int64_t n);  // src/ops/nn_avx2.cpp
void geglu_avx2(const float* g, const float* u, float* h, int64_t n);
void rope_rotate_avx2(float* x, int n_heads, int head_dim, int n_rot, bool neox, const float* c,
                      const float* s);
void rope_rotate_avx512(float* x, int n_heads, int head_dim, int n_rot, bool neox, const float* c,
                        const float* s);  // src/ops/nn_avx512.cpp
}


void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  const float scale = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

namespace {
double theta(const RopeParams& p, int64_t pos, int i) {
  double t = double(pos) * p.freq_scale * std::pow(p.freq_base, -2.0 * i / p.n_rot);
  if (!p.freq_factors.empty()) t /= double(p.freq_factors[size_t(i)]);
  return t;
}

void rotate(float* x, int head_dim, int n_rot, RopeType type, const float* c, const float* s) {
  const int half = n_rot / 2;
  for (int i = 0; i < half; ++i) {
    const int a = type == RopeType::kNormal ? 2 * i : i;
    const int b = type == RopeType::kNormal ? 2 * i + 1 : i + half;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c[i] - x1 * s[i];
    x[b] = x0 * s[i] + x1 * c[i];
  }
}
}  // namespace

bool same_rope(const RopeParams& a, const RopeParams& b) {
  return a.type == b.type && a.n_rot == b.n_rot && a.freq_base == b.freq_base && a.freq_scale == b.freq_scale &&
         a.freq_factors == b.freq_factors;
}

void RopeTable::ensure(int64_t n_pos) {
  if (n_pos <= n_pos_) return;
  // Exactly the positions asked for: the vectors' own growth amortizes a decode's one-position
  // steps, and their unused capacity is never resident (util/page_vector.h).
  const int64_t want = n_pos;
  const int half = p_.n_rot / 2;
  cos_.resize(static_cast<size_t>(want * half));
  sin_.resize(static_cast<size_t>(want * half));
  for (int64_t pos = n_pos_; pos < want; ++pos) {
    for (int i = 0; i < half; ++i) {
      const double t = theta(p_, pos, i);
      cos_[size_t(pos * half + i)] = float(std::cos(t));
      sin_[size_t(pos * half + i)] = float(std::sin(t));
    }
  }
  n_pos_ = want;
}

void rope_rows(const RopeTable& table, float* x, int64_t rows, int64_t stride, const int32_t* pos, int n_heads,
               int head_dim) {
  const RopeParams& p = table.params();
  const bool neox = p.type == RopeType::kNeox;
  const bool avx512 = simd_at_least(SimdLevel::kAvx512) && p.n_rot % (neox ? 32 : 16) == 0;
  const bool avx2 = simd_at_least(SimdLevel::kAvx2) && p.n_rot % 16 == 0;
  for (int64_t r = 0; r < rows; ++r) {
    AQUAKV_CHECK(pos[r] >= 0 && pos[r] < table.n_pos());
    float* xr = x + r * stride;
    const float* c = table.cos_at(pos[r]);
    const float* s = table.sin_at(pos[r]);
    if (avx512) {
      detail::rope_rotate_avx512(xr, n_heads, head_dim, p.n_rot, neox, c, s);
    } else if (avx2) {
      detail::rope_rotate_avx2(xr, n_heads, head_dim, p.n_rot, neox, c, s);
    } else {
      for (int h = 0; h < n_heads; ++h) rotate(xr + int64_t(h) * head_dim, head_dim, p.n_rot, p.type, c, s);
    }
  }
}

void rope_row(const RopeTable& table, float* x, int n_heads, int head_dim, int64_t pos) {
  AQUAKV_CHECK(pos < table.n_pos());
  const int32_t p32 = int32_t(pos);
  rope_rows(table, x, 1, 0, &p32, n_heads, head_dim);
}

void rope_row_inverse(const RopeTable& table, float* x, int n_heads, int head_dim, int64_t pos) {
  AQUAKV_CHECK(pos < table.n_pos());
  const RopeParams& p = table.params();
  const int half = p.n_rot / 2;
  const float* c = table.cos_at(pos);
  const float* s = table.sin_at(pos);
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + int64_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = p.type == RopeType::kNormal ? 2 * i : i;
      const int b = p.type == RopeType::kNormal ? 2 * i + 1 : i + half;
      const double x0 = xh[a], x1 = xh[b];  // rotation by -theta: R(theta)^T
      xh[a] = float(x0 * c[i] + x1 * s[i]);
      xh[b] = float(-x0 * s[i] + x1 * c[i]);
    }
  }
}

void rope_row_ref(const RopeParams& p, float* x, int n_heads, int head_dim, int64_t pos) {
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + int64_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = p.type == RopeType::kNormal ? 2 * i : i;
      const int b = p.type == RopeType::kNormal ? 2 * i + 1 : i + half;
      const double t = theta(p, pos, i);
      const double x0 = xh[a], x1 = xh[b];
      xh[a] = float(x0 * std::cos(t) - x1 * std::sin(t));
      xh[b] = float(x0 * std::sin(t) + x1 * std::cos(t));
    }
  }
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  if (simd_at_least(SimdLevel::kAvx2)) return detail::softmax_avx2(x, n);
  softmax_ref(x, n);
}

void softmax_ref(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu(const float* g, const float* u, float* h, int64_t n) {
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void geglu(const float* g, const float* u, float* h, int64_t n) {
  if (simd_at_least(SimdLevel::kAvx2)) return detail::geglu_avx2(g, u, h, n);
  geglu_ref(g, u, h, n);
}

void geglu_ref(const float* g, const float* u, float* h, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float z = g[i];
    h[i] = 0.5f * z * (1.0f + std::tanh(kSqrt2OverPi * (z + 0.044715f * z * z * z))) * u[i];
  }
}

void softcap(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

}  // namespace aquakv
