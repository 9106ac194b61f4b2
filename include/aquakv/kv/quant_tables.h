// Calibrated per-layer quantizer tables: KVQuant's datatypes and key ranges, or Coupled
// Quantization's codebooks, for one model (the file `aquakv calibrate --method kvquant|cq`
// writes, docs/ADAPTERS.md "Quantizer tables"), and the `kvquant:FILE` / `cq:FILE` caches built
// from them. Owns: the in-memory form, the versioned checksummed binary format, its validating
// loader, the model check and the per-layer cache assembly. Not: fitting (calib/kvquant_fit.h,
// calib/cq_fit.h) or the row codecs (quant/kvquant_codec.h, quant/cq_codec.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// One layer's tables. KVQuant: key/value centroids are the 2^bits datatype values (increasing),
// key offset/scale the C per-channel ranges. CQ: key/value centroids are the codebooks,
// [C / group][2^bits][group] floats; offset/scale are empty.
struct QuantLayerTables {
  std::vector<float> key_centroids, value_centroids;
  std::vector<float> key_offset, key_scale;
};

struct QuantTables {
  std::string method = "kvquant";  // "kvquant" or "cq"
  ModelFingerprint model;
  int bits = 3;                    // KVQuant: bits per value; CQ: bits per code
  int64_t outliers_per_row = 0;    // KVQuant: values per row kept exact in the sparse list
  int64_t group = 0;               // CQ: channels per group c
  std::string notes;               // free text: calibration settings and fit report as JSON
  std::vector<QuantLayerTables> layers;
  uint64_t checksum = 0;           // the file's checksum (set by the loader; names the tables)

  int64_t bytes_in_memory() const;
};

inline constexpr uint32_t kQuantTablesVersion = 1;

// Writes atomically (util/file_io.h). Refuses tables the codecs would refuse.
void save_quant_tables(const QuantTables& t, const std::string& path);
// Reads and validates structure, checksum and every table (Error naming the file and field).
QuantTables load_quant_tables(const std::string& path);
QuantTables parse_quant_tables(std::span<const uint8_t> bytes, const std::string& name);

// The --kv formats "kvquant" and "cq": args "FILE[,p=N][,b=N]" (defaults from `defaults`). The
// file's method must be `method`. Refuses a file made for another model (dimensions always;
// architecture and fingerprint when the shape carries them).
std::unique_ptr<KvCache> make_quant_tables_cache(const std::string& method, const std::string& defaults,
                                                 const std::string& args, const KvShape& shape);

}  // namespace aquakv
