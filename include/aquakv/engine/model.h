// Model: a llama-family transformer described by a GGUF file. Owns: the architecture read from
// the `{arch}.*` metadata (ModelConfig), validation of every tensor's name, shape and type, and
// the weights as views into the memory-mapped file (QMatrix); only small vectors (norms, biases,
// rope frequency factors) are copied to f32. Not: the computation (engine/forward.h), the
// tokenizer (engine/tokenizer.h), KV storage (kv/).
//
// Supported architectures: llama and mistral (RoPE on adjacent pairs, the layout llama.cpp's
// converter writes), qwen2 (NeoX RoPE, q/k/v biases), gemma3 (NeoX RoPE, embeddings scaled by
// sqrt(d_model), QK-norm, sandwich norms, GeGLU, sliding-window layers with their own RoPE base;
// docs/ENGINE.md). Anything else -- other architectures, mixture-of-experts tensors, attention
// logit soft-capping, unknown tensor types, wrong shapes -- is refused with an Error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/engine/gguf.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/ops/nn.h"

namespace aquakv {

struct ModelConfig {
  std::string arch;        // general.architecture, e.g. "llama"
  std::string name;        // general.name ("" if absent)
  int n_layers = 0;        // {arch}.block_count
  int d_model = 0;         // {arch}.embedding_length
  int n_ff = 0;            // {arch}.feed_forward_length
  int n_heads = 0;         // {arch}.attention.head_count
  int n_kv_heads = 0;      // {arch}.attention.head_count_kv (default n_heads)
  int head_dim = 0;        // {arch}.attention.key_length (default d_model / n_heads)
  int64_t n_ctx_train = 0; // {arch}.context_length
  int64_t n_vocab = 0;     // rows of token_embd
  float norm_eps = 1e-5f;  // {arch}.attention.layer_norm_rms_epsilon
  RopeParams rope;         // type, n_rot, base, linear scale, Llama-3 frequency factors
  bool has_qkv_bias = false;
  bool tied_output = false;  // output projection is token_embd (no output.weight)
  // Query scale of attention: scores are (q . k) * attn_scale. 1/sqrt(head_dim) except gemma3
  // 27B (62 layers), whose scale is 1/sqrt(d_model/n_heads) (llama.cpp's rule).
  float attn_scale = 0.0f;
  // Gemma-style blocks; all off for llama/mistral/qwen2.
  float embd_scale = 1.0f;          // embeddings are multiplied by this (gemma3: sqrt(d_model))
  bool qk_norm = false;             // per-head RMSNorm of q and k (attn_q/k_norm) before RoPE
  bool post_norms = false;          // RMSNorm of the attention and FFN outputs before the add
  bool gelu_ffn = false;            // GeGLU (gelu, tanh form) instead of SwiGLU
  float final_logit_softcap = 0.0f; // > 0: logits = cap * tanh(logits / cap)
  // Sliding-window attention: window[l] = how many positions (itself included) a query of layer
  // l sees, 0 = all (a global layer); empty = every layer global. Sliding layers rotate with
  // rope_swa, global ones with rope.
  std::vector<int64_t> window;
  RopeParams rope_swa;
  bool is_swa(int l) const { return !window.empty() && window[size_t(l)] > 0; }
  const RopeParams& layer_rope(int l) const { return is_swa(l) ? rope_swa : rope; }
  int64_t q_width() const { return int64_t(n_heads) * head_dim; }
  int64_t kv_width() const { return int64_t(n_kv_heads) * head_dim; }
};

// One transformer block. Matrix shapes are (rows x cols) = (outputs x inputs).
struct LayerWeights {
  std::vector<float> attn_norm;  // (d_model)
  std::vector<float> q_norm, k_norm;  // (head_dim) QK-norm weights, or empty
  std::vector<float> post_attn_norm;  // (d_model) or empty
  std::vector<float> post_ffn_norm;   // (d_model) or empty
  QMatrix wq;                    // (n_heads*head_dim, d_model)
  QMatrix wk;                    // (n_kv_heads*head_dim, d_model)
  QMatrix wv;                    // (n_kv_heads*head_dim, d_model)
  QMatrix wo;                    // (d_model, n_heads*head_dim)
  std::vector<float> bq, bk, bv; // empty, or (n_heads*head_dim) / (n_kv_heads*head_dim)
  std::vector<float> ffn_norm;   // (d_model)
  QMatrix w_gate;                // (n_ff, d_model)
  QMatrix w_up;                  // (n_ff, d_model)
  QMatrix w_down;                // (d_model, n_ff)
};

class Model {
 public:
  // Opens, validates and maps `path`. Throws Error naming the file and the field on problems.
  static std::unique_ptr<Model> load(const std::string& path);
  // Same from an already opened file (the Model keeps it alive).
  static std::unique_ptr<Model> from_gguf(std::unique_ptr<GgufFile> file);

  const ModelConfig& config() const { return cfg_; }
  const GgufFile& gguf() const { return *file_; }
  const std::string& path() const { return file_->path(); }

  const QMatrix& tok_embd() const { return tok_embd_; }   // (n_vocab, d_model)
  const QMatrix& output() const { return output_; }       // (n_vocab, d_model), may be tok_embd
  const std::vector<float>& output_norm() const { return output_norm_; }  // (d_model)
  const LayerWeights& layer(int i) const { return layers_[size_t(i)]; }

  // The KV shape a cache for this model needs, for `max_tokens` tokens per sequence, with the
  // model's identity (arch, meta_hash) so caches holding model-specific data can check it.
  KvShape kv_shape(int64_t max_tokens) const;
  // The model fingerprint of engine/fingerprint.h, computed once at load.
  uint64_t meta_hash() const { return meta_hash_; }
  // Bytes of weights in the file (all tensors the model uses).
  int64_t weight_bytes() const { return weight_bytes_; }
  // Bytes of weights held repacked in 16-row groups for the decode kernels (ops/qpack.h): every
  // Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K matrix the products read, unless AQUAKV_REPACK=0. Their pages of the
  // file are released after packing (not resident twice); 0 when nothing was packed.
  int64_t packed_bytes() const { return packed_bytes_; }

 private:
  Model() = default;
  std::unique_ptr<GgufFile> file_;
  ModelConfig cfg_;
  QMatrix tok_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  int64_t weight_bytes_ = 0;
  uint64_t meta_hash_ = 0;
  // Weights repacked for the decode kernels (ops/qpack.h); the QMatrix views point into it.
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], FreeDeleter> packed_;
  int64_t packed_bytes_ = 0;
  void pack_weights();
};

}  // namespace aquakv
