// Model fingerprint: what ties calibrated AQUA-KV predictors (kv/adapters.h) to one model. Owns:
// the hash of the GGUF metadata and tensors that determine keys and values. Not: the adapter
// file (kv/adapters.h) or the check against it (kv/compressed_formats.h, through KvShape).
//
// meta_hash = FNV-1a 64 over: every metadata key starting with "<arch>." and its value (the
// hyper-parameters), then for every tensor its name, shape, type and the first and last 4 KiB
// of its data. Retokenizing or renaming a model does not change it; another fine-tune, another
// quantization of the weights or other hyper-parameters do. Model computes it once at load and
// passes it to caches as KvShape::model_hash.
#pragma once

#include <cstdint>

#include "aquakv/engine/gguf.h"
#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// The hash above; `arch` is general.architecture.
uint64_t model_meta_hash(const GgufFile& file, const std::string& arch);

// The adapter file's model identity: arch and meta_hash from the file, the rest from `shape`.
ModelFingerprint model_fingerprint(const GgufFile& file, const KvShape& shape);
// The same from a loaded model's arch and hash (ModelConfig::arch, Model::meta_hash), without
// reading the tensors' samples again: the model has released the file's pages of its packed
// weights, and the samples would bring ~24 MiB of them back into the process (the kernel reads
// and maps 64 KiB around each 4 KiB read).
ModelFingerprint model_fingerprint(const std::string& arch, uint64_t meta_hash, const KvShape& shape);

}  // namespace aquakv
