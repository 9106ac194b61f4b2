// ThinK key-channel pruning as a cache format. Owns: the query-driven choice of key channels per
// head, the storage of pruned keys (only the kept channels, coded by a key codec) and full
// values, and attention on them. Not: the codecs (quant/), the attention kernels (kv/attend.h).
//
// After Xu et al. 2024 ("ThinK: thinner key cache by query-driven pruning"): a key channel i of
// KV head h matters by how much it can add to q.k, estimated by the magnitude score
//   s(h, i) = ||Q_w[:, i]||_2 * ||K[:, h, i]||_2
// over an observation window of queries Q_w (every query head of h's group) and the keys being
// pruned; the floor(prune * head_dim + 0.5) lowest-scoring channels of every head are dropped
// (equal scores: the higher channel index first). Scores use keys and queries after RoPE, as
// attention sees them.
//
// Storage per sequence and layer, in position order, like the compressed stack
// (kv/aquakv_cache.h): [P exact sinks (fp16, full)] [chunks] [exact buffer (fp16, full)].
// When the buffer holds >= B rows at the end of a step, it becomes one chunk: its channels are
// chosen from the chunk's keys and the window of queries seen since the previous chunk (the
// queries of the chunk's own tokens, and any step after them); the chunk keeps, per head, the
// list of kept channels (one byte each) and its keys' kept channels coded by the key codec as
// rows of n_kv_heads * kept values; values are coded whole by the value codec. Attention reads
// a pruned key as zero in its dropped channels, which is exactly q.k over the kept ones.
//
// Spec: think:PRUNE[,p=N][,b=N][,k=CODEC][,v=CODEC]   (defaults p=4, b=128, k=v=fp16)
//   e.g. think:0.5 (fp16 rows, half the key channels), think:0.5,k=higgs2,v=higgs2 (HIGGS with
//   ThinK). The key codec needs rows of n_kv_heads * kept values (HIGGS: a Hadamard group >= 8
//   dividing it: on 3 heads of 64, kept = 32 or 40, i.e. prune 0.5 or 0.375).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct ThinkOptions {
  double prune = 0.5;  // share of each head's key channels dropped, [0, 1)
  int64_t sinks = 4;   // P
  int64_t buffer = 128;  // B
  std::string key_codec = "fp16", value_codec = "fp16";
};

// Channels kept per head for `opt` on heads of `head_dim`.
int think_kept_channels(const ThinkOptions& opt, int head_dim);

std::unique_ptr<KvCache> make_think_cache(const KvShape& shape, const ThinkOptions& opt);

// The registry's entry: args = "PRUNE[,p=N][,b=N][,k=CODEC][,v=CODEC]".
std::unique_ptr<KvCache> make_think_from_spec(const std::string& args, const KvShape& shape);

}  // namespace aquakv
