// Gradients of the language-model loss with respect to the KV cache. Owns: a float64 (or
// float32) re-run of the llama-family forward over one window on the dequantized weights,
// keeping each layer's input, and its backward pass down to every layer's pre-RoPE keys and
// values (per token and channel); their squares are the diagonal Fisher information that
// KVQuant and Coupled Quantization weigh their k-means by. Not: the inference forward (engine/forward.h), weight
// gradients (none are computed), the fits that use the weights (calib/kvquant_fit.h, cq_fit.h).
//
// Loss of a window of T tokens: L = mean over t in [0, T-1) of -log softmax(logits_t)[tokens[t+1]]
// (next-token cross-entropy, as perplexity scores it). Layers (x: the residual stream):
//   xn = RMSNorm(x) * w_attn;  q, k, v = xn W^T (+ biases);  q, k rotated by RoPE;
//   att_h = softmax_causal(scale * q_h k_g^T) v_g  (g: the KV head of query head h);
//   x += att Wo^T;  xn2 = RMSNorm(x) * w_ffn;  x += (silu(xn2 Wg^T) * (xn2 Wu^T)) Wd^T.
// The backward pass recomputes each layer from its stored input (memory: the T x d inputs of
// every layer instead of every intermediate). Gemma-style options (QK-norm, post-norms, GeGLU,
// soft-caps, sliding windows, scaled embeddings) are refused with an Error.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "aquakv/engine/model.h"

namespace aquakv {

// One pre-RoPE key or value element moved by `delta` during the forward (finite differences).
struct KvPerturbation {
  int layer = 0;
  bool value = false;  // false: the key
  int64_t token = 0, channel = 0;
  double delta = 0;
};

struct KvGradients {
  double loss = 0;
  int64_t n_tokens = 0, width = 0;
  std::vector<std::vector<double>> k, v;    // [layer] (T, C): the run's pre-RoPE keys and values
  std::vector<std::vector<double>> dk, dv;  // [layer] (T, C): dL/dk (pre-RoPE), dL/dv
};

// Storage and matrix products in float64 (the reference the tests check against finite
// differences) or float32 (half the time, for calibration; sums and the softmax stay in float64).
enum class KvGradientPrecision { kFloat64, kFloat32 };

class KvGradientModel {
 public:
  // Throws Error for architectures outside the supported llama family.
  explicit KvGradientModel(const Model& model, KvGradientPrecision precision = KvGradientPrecision::kFloat64);

  // L of the window (at least 2 tokens), with one element perturbed when p is given.
  double loss(std::span<const int32_t> tokens, const KvPerturbation* p = nullptr) const;
  // L, the keys and values, and the gradients of L with respect to them.
  KvGradients gradients(std::span<const int32_t> tokens) const;

 private:
  double run(std::span<const int32_t> tokens, const KvPerturbation* p, KvGradients* g) const;
  const Model& model_;
  KvGradientPrecision precision_;
};

}  // namespace aquakv
