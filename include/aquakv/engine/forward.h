// Forward: runs tokens of one sequence through a Model, reading and writing keys/values only
// through a KvCache. Owns: the layer loop (RMSNorm, Q/K/V projections, QK-norm, RoPE,
// grouped-query attention, post-norms, SwiGLU or GeGLU feed-forward, output logits and their
// soft-cap) and its scratch buffers. Not: the weights (engine/model.h), KV storage (kv/),
// sampling (engine/sampler.h).
//
// Keys reach the cache before RoPE, with the model's RoPE parameters in the cache's shape; the
// cache format applies RoPE to keys itself and computes attention on its own storage
// (kv/kv_cache.h), so a cache may store and predict pre-RoPE keys.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "aquakv/engine/model.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/ops/matmul.h"

namespace aquakv {

struct ForwardOptions {
  // Which matmul strategy to use; kAuto picks the dot path for few tokens and the gemm path
  // otherwise. Tests force one path to compare batch and token-by-token runs exactly.
  MatmulPath matmul = MatmulPath::kAuto;
  // Longest step handed to the cache at once; longer inputs are split (bounds scratch memory).
  int64_t max_step = 512;
  // Sees every layer's attention weights (forces the caches' reference attention path).
  KvAttentionObserver* observer = nullptr;
};

class Forward {
 public:
  // threads > 0 sets the process-wide thread count (parallel_for and OpenBLAS); 0 keeps it.
  explicit Forward(const Model& model, int threads = 0, ForwardOptions options = {});
  ~Forward();

  // Appends `tokens` to sequence `seq` of `cache` (their positions continue from
  // cache.n_tokens(seq)) and computes logits. logits_out: (tokens.size(), n_vocab) when
  // all_logits, else (n_vocab) for the last token only; nullptr computes no logits.
  // Throws Error for token ids outside [0, n_vocab) or when the cache's context is full
  // (nothing is appended then), or when the cache's shape does not match the model.
  void eval(KvCache& cache, int seq, std::span<const int32_t> tokens, float* logits_out,
            bool all_logits);

  // One decode step of B sequences at once: appends tokens[b] to sequence seqs[b] of
  // *caches[b] and writes its next-token logits to logits_out + b*n_vocab ((B, n_vocab);
  // nullptr computes none). The weight matmuls run once for all B rows (each weight row is read
  // once per step); attention runs per sequence through its own cache, whose calls are exactly
  // those of eval() with one token. The caches must be B distinct objects: the KvCache protocol
  // keeps one step open per object (append/read name no sequence), so sequences of one cache
  // cannot share a step. With the default options the logits equal, bit for bit, those of B
  // separate eval() calls with one token each (same per-row kernels, dot path); with
  // ForwardOptions::matmul = kGemm both run sgemm, whose rounding may depend on B. Throws Error
  // as eval() does, and before any cache is touched.
  void eval_batch(std::span<KvCache* const> caches, std::span<const int> seqs,
                  std::span<const int32_t> tokens, float* logits_out);

  const Model& model() const { return model_; }

 private:
  struct Scratch;
  void step(KvCache& cache, int seq, std::span<const int32_t> tokens, float* logits_out,
            bool all_logits);
  void layer(KvCache& cache, int l, int64_t n, int64_t p0);
  void layer_batch(std::span<KvCache* const> caches, int l, std::span<const int64_t> p0);
  void check_shape(const KvCache& cache) const;
  void check_token(int32_t token, int64_t index) const;
  void check_room(const KvCache& cache, int seq, int64_t n) const;
  MatmulPath one_token_path() const;
  void embed(std::span<const int32_t> tokens);
  void qkv(const LayerWeights& w, int64_t n, MatmulPath mp);
  void attend(KvCache& cache, int l, int64_t n, int64_t p0, const float* k, const float* v,
              float* q, float* att);
  void out_and_ffn(const LayerWeights& w, int64_t n, MatmulPath mp);
  void logits(int64_t first, int64_t n, float* logits_out, MatmulPath mp);

  const Model& model_;
  ForwardOptions opt_;
  std::unique_ptr<Scratch> s_;
};

}  // namespace aquakv
