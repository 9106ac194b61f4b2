// Element-wise and row-wise neural-network kernels of the transformer: RMSNorm, rotary position
// embedding (RoPE, both pair conventions), softmax, SwiGLU, GeGLU, soft-capping. Owns: their math. Not: attention
// (kv/attend.h, ops/attn_tile.h) or matrix products (ops/matmul.h).
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/util/page_vector.h"

namespace aquakv {

// y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], mean accumulated in double. y may alias x.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// Rotary embedding. For rotated pair i (0 <= i < n_rot/2) at position p the angle is
//   theta_i(p) = p * freq_scale * base^(-2i/n_rot) / factor_i
// (factor_i from Llama-3 style frequency factors, else 1). The pair is (x[2i], x[2i+1]) for
// kNormal (llama GGUFs: the converter permutes Q/K rows so that adjacent values pair up) and
// (x[i], x[i + n_rot/2]) for kNeox (qwen2 and others). Values at or past n_rot are unchanged.
enum class RopeType { kNormal, kNeox };

struct RopeParams {
  RopeType type = RopeType::kNormal;
  int n_rot = 0;             // rotated dimensions per head (<= head_dim, even)
  double freq_base = 10000.0;
  double freq_scale = 1.0;   // linear scaling: 1/factor
  std::vector<float> freq_factors;  // empty or n_rot/2 divisors of the frequencies
};

// Whether two parameter sets give the same angles (then their tables hold the same values, bit
// for bit: both are computed by RopeTable::ensure).
bool same_rope(const RopeParams& a, const RopeParams& b);

// cos/sin of theta_i(p) for p in [0, n_pos), computed in double, grown on demand.
class RopeTable {
 public:
  explicit RopeTable(RopeParams params) : p_(std::move(params)) {}
  const RopeParams& params() const { return p_; }
  void ensure(int64_t n_pos);  // not thread-safe; call before parallel use
  int64_t n_pos() const { return n_pos_; }
  const float* cos_at(int64_t pos) const { return cos_.data() + pos * (p_.n_rot / 2); }
  const float* sin_at(int64_t pos) const { return sin_.data() + pos * (p_.n_rot / 2); }

 private:
  RopeParams p_;
  int64_t n_pos_ = 0;
  PageVector<float> cos_, sin_;  // (n_pos, n_rot / 2)
};

// Rotates n_heads heads of head_dim values (one token's row) in place at position pos
// (pos < table.n_pos()).
void rope_row(const RopeTable& table, float* x, int n_heads, int head_dim, int64_t pos);
// rope_row on `rows` rows (row r at x + r*stride, position pos[r]), one dispatch for all.
void rope_rows(const RopeTable& table, float* x, int64_t rows, int64_t stride, const int32_t* pos, int n_heads,
               int head_dim);

// The inverse rotation (by -theta; scalar): recovers keys before RoPE from stored rotated keys,
// up to rounding (used when a sequence moves between cache formats, kv/kv_state.h).
void rope_row_inverse(const RopeTable& table, float* x, int n_heads, int head_dim, int64_t pos);

// Reference: computes the angles directly in double. For tests.
void rope_row_ref(const RopeParams& p, float* x, int n_heads, int head_dim, int64_t pos);

// In place: x = exp(x - max) / sum. softmax_ref uses libm expf and a double sum; softmax
// dispatches to AVX2 (polynomial exp, relative error < 5e-7 per element; tests check 2e-6).
void softmax(float* x, int64_t n);
void softmax_ref(float* x, int64_t n);

// h[i] = silu(g[i]) * u[i], silu(z) = z / (1 + exp(-z)). h may alias g.
void swiglu(const float* g, const float* u, float* h, int64_t n);

// h[i] = gelu(g[i]) * u[i] with the tanh approximation (Gemma's feed-forward):
//   gelu(z) = z/2 * (1 + tanh(sqrt(2/pi) * (z + 0.044715 z^3))). h may alias g.
// geglu_ref is that formula with libm tanhf; geglu dispatches to AVX2, which computes the same
// function as z * sigmoid(2y) with a polynomial exp (relative error <= 1e-6 + 3e-7 |2y|, where
// the reference's 1 + tanh cancels for negative z; derivation in src/ops/nn_avx2.cpp).
void geglu(const float* g, const float* u, float* h, int64_t n);
void geglu_ref(const float* g, const float* u, float* h, int64_t n);

// In place: x[i] = cap * tanh(x[i] / cap) (Gemma's logit soft-capping), cap > 0.
void softcap(float* x, int64_t n, float cap);

}  // namespace aquakv
