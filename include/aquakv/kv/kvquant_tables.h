// KVQuant tables: the calibrated per-layer datatypes and key ranges of one model (the file that
// `aquakv calibrate --method kvquant` writes, docs/ADAPTERS.md "KVQuant tables") and the
// `kvquant:FILE` cache built from them. Owns: the in-memory form, the versioned checksummed
// binary format, its validating loader, the model check, and the per-layer cache assembly.
// Not: fitting (calib/kvquant_fit.h) or the row codec (quant/kvquant_codec.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

struct KvQuantLayer {
  std::vector<float> key_centroids, value_centroids;  // 2^bits each, increasing
  std::vector<float> key_offset, key_scale;           // C each (pre-RoPE channel ranges)
};

struct KvQuantTables {
  ModelFingerprint model;
  int bits = 3;
  int64_t outliers_per_row = 0;  // k: values per row kept exact in the sparse list
  std::string notes;             // free text: calibration settings and fit report as JSON
  std::vector<KvQuantLayer> layers;

  int64_t bytes_in_memory() const;
};

inline constexpr uint32_t kKvQuantVersion = 1;

// Writes atomically (util/file_io.h).
void save_kvquant(const KvQuantTables& t, const std::string& path);
// Reads and validates structure, checksum and every table (Error naming the file and field).
KvQuantTables load_kvquant(const std::string& path);
KvQuantTables parse_kvquant(std::span<const uint8_t> bytes, const std::string& name);

// The --kv format: args "FILE[,p=N][,b=N]" (defaults: `defaults`, "p=1,b=1": the first token
// exact, every other token coded at the end of its step). Refuses a file made for another model
// (dimensions always; architecture and fingerprint when the shape carries them).
std::unique_ptr<KvCache> make_kvquant_cache(const std::string& defaults, const std::string& args,
                                            const KvShape& shape);

}  // namespace aquakv
