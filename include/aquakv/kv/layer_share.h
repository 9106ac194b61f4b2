// KVSharer layer sharing: a plan saying which layers read another layer's rows instead of
// storing their own (the file `aquakv calibrate --method kvsharer` writes, docs/ADAPTERS.md
// "Layer-sharing plans"), and the `kvsharer:PLAN[+FORMAT]` cache built from it. Owns: the plan's
// in-memory form, its versioned checksummed file, the validating loader, and the wrapper cache
// that maps layers onto a format holding only the layers that store rows. Not: the calibration
// search that chooses the plan (calib/kvsharer_fit.h), the wrapped format.
//
// After Yang et al. 2024 ("KVSharer: efficient inference via layer-wise dissimilar KV cache
// sharing"). A shared layer j has a source s < j that stores its own rows; j appends nothing
// and its attention runs its own queries over s's rows (keys, values and positions), which the
// step has already appended (layers run in order). The wrapped format is built for the
// "compact" shape of the L - shared layers that store rows (kept layer i -> compact index);
// shared layers store 0 bytes, and bits per value divide the wrapped format's bytes by every
// layer's values, shared ones included. The compact shape's model_hash is the model's combined
// with the plan's checksum, so a format fitted to one model (AQUA-KV adapters) must have been
// fitted for this plan's compact chain (`aquakv calibrate --share-plan PLAN`).
//
// File layout: magic "AQKVSHAR", u32 version, u64 file length, model fingerprint (str arch, i64
// n_layers, n_kv_heads, head_dim, kv_width, u64 meta_hash), i32 source per layer (-1: stores
// its rows), str notes (the search's settings and log, JSON), u64 FNV-1a 64 of every byte before.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct LayerSharePlan {
  ModelFingerprint model;
  std::vector<int32_t> source;  // per layer: -1, or the layer (< it, itself not shared) it reads
  std::string notes;
  uint64_t checksum = 0;  // the file's checksum (set by the loader and by save)

  int n_shared() const;
};

inline constexpr uint32_t kLayerSharePlanVersion = 1;

// Error naming `what` unless every source is -1 or an earlier layer that stores its rows.
void check_layer_share_plan(const std::vector<int32_t>& source, const std::string& what);

// Whether layer b may read layer a's rows: equal RoPE parameters and attention window.
bool layers_can_share(const KvShape& shape, int a, int b);

// Writes atomically; sets plan.checksum. Loads: validates structure, checksum and the plan.
void save_layer_share_plan(LayerSharePlan& plan, const std::string& path);
LayerSharePlan load_layer_share_plan(const std::string& path);
LayerSharePlan parse_layer_share_plan(std::span<const uint8_t> bytes, const std::string& name);

// The shape of the layers that store rows (see above); `plan_checksum` enters model_hash.
KvShape compact_share_shape(const KvShape& shape, const std::vector<int32_t>& source, uint64_t plan_checksum);

// The wrapper over `inner` (built for compact_share_shape). Refuses a plan whose shared layer
// and source differ in RoPE or window.
std::unique_ptr<KvCache> make_layer_share_cache(const KvShape& shape, const std::vector<int32_t>& source,
                                                std::unique_ptr<KvCache> inner, const std::string& name);

// The registry's entry: args = "PLAN[+FORMAT]" (FORMAT default fp16).
std::unique_ptr<KvCache> make_kvsharer_from_spec(const std::string& args, const KvShape& shape);

}  // namespace aquakv
