// Per-user cache of self-calibrated AQUA-KV adapters: what `--kv aquakv` without a file uses.
// Owns: the file name of a model's adapters (model, fingerprint, quantizer configuration,
// calibration size), the lookup and its validation, and calibrating once (on text the model
// samples itself, no data files) when the file is missing. Not: the calibration (calib/calibrate.h),
// the file format (kv/adapters.h), where the per-user cache directory is (the front end says).
//
// The predictors are a deterministic function of the model and the options below (the file's
// notes also record wall times), so a file is reused as long as the model's fingerprint
// (engine/fingerprint.h) and the options, all part of its name, are the same. A file
// that fails validation (corrupted, truncated, made for another model) is an error naming the
// file and telling to delete it: it is never overwritten behind the user's back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "aquakv/calib/calibrate.h"
#include "aquakv/engine/model.h"

namespace aquakv {

// The calibration `--kv aquakv` runs: self-generated text (calibrate's no -f path), seeded.
struct SelfCalibration {
  int64_t gen_tokens = 8192;  // tokens the model samples (as gen_tokens / window sequences)
  int64_t window = 1024;      // tokens per sequence, each started from BOS
  std::string key_codec = "higgs2", value_codec = "higgs2", layer0 = "higgs4";
  uint64_t seed = 1;
  int threads = 0;
};

// <model file stem>-<meta_hash, 16 hex>-<key>-<value>-<layer0>-self<gen_tokens>w<window>s<seed>.aqkv
// with the codecs' canonical specs, ':' written as '.' (e.g. higgs.2x16.g192).
std::string self_adapter_file_name(const Model& model, const SelfCalibration& s);

struct CachedAdapters {
  std::string path;
  bool calibrated = false;  // true: this call ran the calibration and wrote the file
  double seconds = 0;       // wall time of that calibration
};

// The adapters for `model` under `dir` (created if missing). When the file is absent, calls
// `on_calibrate(path)` and calibrates with `s`, reporting `progress` like calibrate(), then
// writes the file atomically (temporary file + rename: concurrent runs are safe, an interrupted
// one leaves nothing). An existing file is loaded and checked against the model and `s`'s
// quantizer configuration; on failure, Error "... (cached adapters: delete FILE to recalibrate)".
CachedAdapters cached_self_adapters(const Model& model, const SelfCalibration& s, const std::string& dir,
                                    const std::function<void(const std::string& path)>& on_calibrate = {},
                                    const std::function<void(const char*, int64_t, int64_t)>& progress = {});

}  // namespace aquakv
