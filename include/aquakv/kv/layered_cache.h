// A cache made of one single-layer cache per model layer: lets formats whose codecs differ from
// layer to layer (KVQuant's per-layer datatypes) use the compressed stack (kv/aquakv_cache.h),
// whose codecs are one per stream. Owns: forwarding the step protocol to the layer caches and
// summing their accounts. Not: storage (the layer caches own it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// The shape layer `layer` of `shape` has on its own: one layer, that layer's RoPE and window.
KvShape single_layer_shape(const KvShape& shape, int layer);

// `layers[l]` serves layer l of `shape` (each built for single_layer_shape(shape, l)); `name` is
// the --kv spelling; `fixed_bytes` the per-model bytes (e.g. calibrated tables); `state_tag`
// goes into state_format() (e.g. a checksum of those tables: saved codes are only meaningful
// with them). Saved state is the layers' sections, prefixed "L<l>.".
std::unique_ptr<KvCache> make_layered_cache(const KvShape& shape, std::string name,
                                            std::vector<std::unique_ptr<KvCache>> layers,
                                            int64_t fixed_bytes = 0, std::string state_tag = "");

}  // namespace aquakv
