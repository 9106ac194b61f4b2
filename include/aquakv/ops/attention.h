// Causal grouped-query attention over f32 rows. Owns: scores, causal mask, softmax and the
// weighted sum of values for n new queries against all keys of a sequence. Not: RoPE (applied
// by the caller to q and k), KV storage (kv/).
#pragma once

#include <cstdint>

namespace aquakv {

struct AttentionShape {
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads; query head h uses kv head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
};

// q:   (n, n_heads*head_dim) queries of positions p0 .. p0+n-1 (row stride n_heads*head_dim).
// k,v: (p0+n, kv_stride) keys and values of positions 0 .. p0+n-1; head g at columns
//      g*head_dim .. g*head_dim+head_dim-1.
// out: (n, n_heads*head_dim). Query i attends to keys 0 .. p0+i (causal mask), softmax in f32.
// Threads: parallel_for over (head, block of queries).
void attention(const AttentionShape& s, const float* q, int64_t n, int64_t p0, const float* k,
               const float* v, int64_t kv_stride, float* out);

// Reference: float64 scores and sums, single thread. For tests.
void attention_ref(const AttentionShape& s, const float* q, int64_t n, int64_t p0,
                   const float* k, const float* v, int64_t kv_stride, float* out);

}  // namespace aquakv
