// AQUA-KV adapter file: the calibrated cross-layer predictors of one model for one quantizer
// configuration. Owns: the in-memory form, the versioned binary format (docs/ADAPTERS.md), the
// atomic writer and the validating loader. Not: fitting (calib/) or applying them (kv/aquakv_cache).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/predictor.h"

namespace aquakv {

// What identifies the model the predictors were fitted on. meta_hash covers the metadata and
// tensors that determine K and V (engine/fingerprint.h; the engine passes it in KvShape).
struct ModelFingerprint {
  std::string arch;     // e.g. "llama"
  int64_t n_layers = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t kv_width = 0;  // C = n_kv_heads * head_dim
  uint64_t meta_hash = 0;
};

// The quantizer configuration the predictors were fitted with (they are specific to it: layer
// l's predictors see layer l-1's quantized reconstructions). Codec specs are the canonical
// spellings of the chunk codecs (kv/chunk_codec.h).
struct AdapterQuantConfig {
  std::string key_codec;     // layers >= 1, keys' residuals
  std::string value_codec;   // layers >= 1, values' residuals
  std::string layer0_codec;  // layer-0 policy: "f16" (exact 16-bit) or a codec spec
  int64_t group_size = 0;    // Hadamard / scale group size g
  uint64_t signs_seed = 0;   // random Hadamard sign seed, 0 = no signs
};

struct LayerPredictors {
  // Inputs by width: key K̂_{l-1} (C) or [K̂_{l-1} ; V̂_{l-1}] (2C); value [K̂_l ; V̂_{l-1}] (2C)
  // or [K̂_l ; V̂_{l-1} ; K̂_{l-1}] (3C) (the wide inputs, calib/fit_chain.h).
  AffineMap key;    // -> K_l (C); empty: predict zero
  AffineMap value;  // -> V_l (C); empty: predict zero
  // Bit plan (`calibrate --bits`): this layer's residual codecs (canonical specs, layers >= 1);
  // empty: the file's key_codec / value_codec. Every planned codec shares the file's group
  // size and sign seed (checked when the cache is built).
  std::string key_codec, value_codec;
  // Calibrated channel scales of this layer's residual codecs (quant/channel_scaled_codec.h):
  // C values > 0 each, or empty (no scaling).
  std::vector<float> key_scale, value_scale;
};

enum class AdapterDtype : uint32_t { kF32 = 0, kF16 = 1 };

struct Adapters {
  ModelFingerprint model;
  AdapterQuantConfig quant;
  int64_t rank = 0;                      // 0: full rank
  AdapterDtype dtype = AdapterDtype::kF32;  // storage precision of the weights in the file
  std::string notes;                     // free text (calibration settings as JSON)
  std::vector<LayerPredictors> layers;   // n_layers entries; layer 0 has none
  // The checksum field of the file these adapters were loaded from (0 when built in memory):
  // the adapters' identity, which session files record (kv/session_file.h).
  uint64_t file_checksum = 0;

  int64_t n_params() const;
  bool has_plan() const;    // some layer names its own codecs
  bool has_scales() const;  // some layer has channel scales
  bool has_wide_inputs() const;  // some map reads the wide inputs (key 2C, value 3C; ChainOptions)
  // Layer l's key / value residual codec spec (the plan's, else the file's).
  const std::string& key_codec_of(int64_t l) const;
  const std::string& value_codec_of(int64_t l) const;
  int64_t bytes_in_memory() const { return n_params() * 4; }
};

// Version written; load_adapters reads 1 (checksum from aquakv's old FNV basis), 2, 3 (2 plus
// per-layer codecs and channel scales, flag bits 2-4 of a layer record) and 4 (3 plus maps with
// the wide inputs: key maps of 2C inputs, value maps of 3C). Each file is written with the
// lowest version that holds it (files without plans, scales or wide maps as version 2, byte for
// byte what earlier builds wrote), so older builds read what they can.
inline constexpr uint32_t kAdapterVersion = 4;

// Writes atomically (util/file_io.h: a unique temporary next to `path`, fsync'd, renamed).
void save_adapters(const Adapters& a, const std::string& path);

// Reads and validates structure and checksum (Error naming the file and what is wrong).
Adapters load_adapters(const std::string& path);
// The same validation on bytes already in memory (`name` for messages; the fuzz target).
Adapters parse_adapters(std::span<const uint8_t> bytes, const std::string& name);

// Throws Error naming the first field that differs: "adapters FILE: made for model X, this is Y".
void check_adapters_match(const Adapters& a, const ModelFingerprint& model,
                          const AdapterQuantConfig& quant, const std::string& path);

}  // namespace aquakv
