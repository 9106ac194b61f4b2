// Token eviction policies: a cache that wraps any cache format and drops rows from it. Owns: the
// L2-norm rule (which rows to keep), its options and spec parsing. Not: storage (the wrapped
// format holds the kept rows and drops the others through KvCache::drop_rows).
//
// L2-norm eviction (after Devoto et al. 2024, "a simple and effective L2 norm-based strategy"):
// keys with a low L2 norm draw high attention, so the rows with the largest key norms are the
// ones to forget. aquakv's rule, per sequence, checked at the end of every step that leaves it at
// T positions:
//   target  = ceil(keep * T) rows
//   kept    = the rows still held; when kept - target > slack, the candidates (rows at positions
//             >= P, the sinks, and < T - R, the recent window) with the highest scores are
//             dropped, highest first (equal scores: the older first), until kept = target or no
//             candidate is left.
//   score   = sum over layers l of ln ||k_l||_2 (the key row of all KV heads, before RoPE, which
//             keeps norms): the geometric mean of the layers' norms, so a layer counts by how a
//             row's norm compares with its other rows, not by its norm scale.
// One token set for all layers (and heads): a row of the cache spans every KV head, and AQUA-KV
// rebuilds a token's layer l from its layer l - 1, so a token is kept or dropped on every layer
// at once. The paper scores each head and layer on its own; this is the shared-set variant.
// slack > 0 drops rows in batches (the wrapped format compacts its storage once per batch).
//
// Spec: l2evict:KEEP[,p=N][,r=N][,e=N]+FORMAT   (defaults p=4, r=128, e=32), e.g.
//       l2evict:0.5+aquakv:ADAPTERS, l2evict:0.25,r=64+fp16
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct L2EvictOptions {
  double keep = 1.0;     // share of positions kept as rows, (0, 1]
  int64_t sinks = 4;     // P: the first P positions are never dropped
  int64_t recent = 128;  // R: the last R positions are never dropped
  int64_t slack = 32;    // rows above the target before a batch is dropped
};

// Parses "KEEP[,p=N][,r=N][,e=N]" (the part before '+'); `defaults` gives unset options.
L2EvictOptions parse_l2evict_options(const std::string& text, const L2EvictOptions& defaults = {});

// Wraps `inner` (its shape is the cache's). Throws Error for options out of range.
std::unique_ptr<KvCache> make_l2evict_cache(const L2EvictOptions& opt, std::unique_ptr<KvCache> inner);

// The registry's entry: args = "KEEP[,opts]+FORMAT" (FORMAT any --kv spec).
std::unique_ptr<KvCache> make_l2evict_from_spec(const std::string& args, const KvShape& shape);

}  // namespace aquakv
