// MiniCache as a cache format: adjacent layers from the middle of the model down share one
// direction per token and head, each keeping its own magnitude. Owns: the merge (SLERP of the two
// layers' unit vectors), the retention of unmergeable tokens, the storage and attention on it.
// Not: the attention kernels (kv/attend.h).
//
// After Liu et al. 2024 ("MiniCache: KV cache compression in depth dimension"). Layers
// S, S+1 | S+2, S+3 | ... form pairs (a last odd layer stays alone); layers below S are stored
// whole. Per sequence and layer, rows in position order: [P exact sinks] [chunks] [exact buffer],
// all fp16, keys before RoPE (RoPE turns both layers' keys of a position alike, so angles and
// the merge do not depend on it). When the buffer holds >= B rows at the end of a step it becomes
// a chunk; for a pair (a, b), per row and KV head, with x = a's vector, y = b's, u = x/|x|,
// w = y/|y| and the angle O = arccos(u.w):
//   e = sin((1-t) O)/sin O * u + sin(t O)/sin O * w      (SLERP at t, default 0.6; u when O ~ 0)
//   stored: e (fp16, head_dim), |x| and |y| (fp16); restored: a = |x| e, b = |y| e
// Rows whose angular distance O/pi, averaged over heads, is among the largest `keep` share of the
// chunk (default 0.05) are unmergeable: both layers keep them whole. Keys and values merge alike.
//
// Spec: minicache[:S][,t=T][,keep=F][,p=N][,b=N]   (defaults S = n_layers / 2, t=0.6,
// keep=0.05, p=4, b=128)
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct MiniCacheOptions {
  int start = -1;       // S; -1: n_layers / 2
  double t = 0.6;       // SLERP parameter, (0, 1)
  double keep = 0.05;   // share of a chunk's rows kept whole, [0, 1]
  int64_t sinks = 4, buffer = 128;
};

std::unique_ptr<KvCache> make_minicache(const KvShape& shape, const MiniCacheOptions& opt);

// The registry's entry: args = "[S][,t=T][,keep=F][,p=N][,b=N]".
std::unique_ptr<KvCache> make_minicache_from_spec(const std::string& args, const KvShape& shape);

}  // namespace aquakv
