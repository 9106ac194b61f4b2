// The LoRC cache: every key and value stored as its fp16 latent on a per-layer low-rank basis
// (kv/lorc_plan.h). Owns: the latents of each sequence and layer, their positions, and attention
// over their reconstructions. Not: the plan file (kv/lorc_plan.h) or how its bases are chosen
// (calib/lorc_fit.h), the attention kernels (kv/attend.h).
//
// Per token and layer: keys before RoPE -> c_k = (k - o_k) B_k (r_k values, stored fp16), values
// -> c_v = (v - o_v) B_v (r_v values). Attention reconstructs k^ = c_k B_k^T + o_k, rotates it at
// the row's position, and v^ = c_v B_v^T + o_v, a tile at a time on the thread that attends to
// it (KvSegment::produce); no row is kept exact, this step's included, as with the paper's
// compressed projections. Both maps run through ops/affine_rows.h (a fixed summation order), so
// a row's reconstruction does not depend on the tile it is made in. Bits per original value:
// 16 * (r_k + r_v) / (2 C) per layer; the bases are a per-model cost (fixed_bytes).
//
// Spec: lorc:PLAN (a file from `aquakv calibrate --method lorc`). Rows can be dropped
// (l2evict:KEEP+lorc:PLAN); sequences save and load their latents (session files).
#pragma once

#include <memory>
#include <string>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/kv/lorc_plan.h"

namespace aquakv {

// Refuses a plan made for another model (kv/file_envelope.h check_fingerprint).
// The first `sinks` positions of a sequence are kept exact (fp16, before RoPE).
std::unique_ptr<KvCache> make_lorc_cache(const KvShape& shape, LorcPlan plan, int64_t sinks, const std::string& name);

// The registry's entry: args = "PLAN".
std::unique_ptr<KvCache> make_lorc_from_spec(const std::string& args, const KvShape& shape);

}  // namespace aquakv
