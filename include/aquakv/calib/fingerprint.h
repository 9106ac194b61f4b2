// Model fingerprint for adapter files: what ties calibrated predictors to one model. Owns: the
// hash of the GGUF metadata and tensors that determine keys and values. Not: the adapter file
// (kv/adapters.h).
//
// meta_hash = FNV-1a 64 over: every metadata key starting with "<arch>." and its value (the
// hyper-parameters), then for every tensor its name, shape, type and the first and last 4 KiB
// of its data. Retokenizing or renaming a model does not change it; another fine-tune, another
// quantization of the weights or other hyper-parameters do.
#pragma once

#include "aquakv/engine/gguf.h"
#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

ModelFingerprint model_fingerprint(const GgufFile& file, const KvShape& shape);

}  // namespace aquakv
