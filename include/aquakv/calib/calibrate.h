// AQUA-KV calibration front end: from a model and calibration texts (or text the model samples
// itself) to an adapter file. Owns: window sampling, the exact-KV capture run, the call into the
// sequential fit, the report (table + JSON). Not: the fit math (calib/fit_chain.h, calib/ridge.h)
// or the file format (kv/adapters.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/adapters.h"

namespace aquakv {

struct CalibrateOptions {
  std::string model_path;
  std::vector<std::string> text_files;  // empty: sample calibration text from the model
  int64_t tokens = 16384;        // calibration tokens in all (train + validation)
  int64_t window = 1024;         // tokens per window (each run with a fresh cache)
  double val_fraction = 0.125;   // share of the windows held out for validation
  int64_t gen_tokens = 8192;     // tokens sampled from the model when there is no text
  double gen_temperature = 1.0;
  // Self-generated sequences decoded together, one token each per forward step (weights are
  // streamed once per step for all of them). Does not change the text: sequence i samples from
  // its own generator seeded by (seed, i) (see generation_seed).
  int64_t gen_batch = 8;
  std::string key_codec = "higgs2";    // codec of key residuals (quant/codec.h spec)
  std::string value_codec = "higgs2";  // codec of value residuals
  std::string layer0 = "higgs4";       // layer-0 policy: a codec spec, or "fp16" (exact)
  int64_t rank = 0;                    // 0: full-rank predictors
  int64_t key_rank = -1, value_rank = -1;  // per stream (ChainOptions); -1: `rank`
  double damping = 1e-3;
  bool fit_keys = true, fit_values = true;
  uint64_t seed = 1;
  int threads = 0;
  AdapterDtype dtype = AdapterDtype::kF32;
  // Bit plan (calib/bit_plan.h): > 0 chooses each layer's key and value codec among
  // plan_codecs for an average of `bits` bits per value (codes + scales, layer 0 included),
  // after a probe run of the chain with key_codec / value_codec.
  double bits = 0;
  std::vector<std::string> plan_codecs = {"higgs:4x16", "higgs2", "higgs3", "higgs4"};
  bool plan_weighted = true;   // false: plain squared error for keys and values alike
  double plan_key_weight = 1.0;  // extra factor on the key proxy (ablation)
  bool plan_layer_norm = false;  // relative per-layer costs (BitPlanner::set_layer_norm)
  // Calibrated channel scales of the residual codecs (ChainOptions::scale_keys / scale_values).
  bool scale_keys = false, scale_values = false;
  // ChainOptions::wide_keys / wide_values (set_predictor_inputs below).
  bool wide_keys = false, wide_values = false;
  // Also compute the training rows' Fisher information (KvSamples::fk / fv; text windows only).
  bool fisher = false;
  int64_t fisher_windows = 0;  // of the training windows, how many get it (0: all)
  // A KVSharer plan (kv/layer_share.h): the predictors are fitted along the chain of the layers
  // that store rows (each from the previous such layer), for `--kv kvsharer:PLAN+aquakv:FILE`.
  std::string share_plan;
};

struct CalibrateReport {
  std::vector<LayerFitStats> layers;
  // With a bit plan: the proxy cost of every candidate per layer and stream (JSON), and the
  // plan's bits per value (codes + scales, all layers).
  bool planned = false;
  double plan_bits = 0;
  std::string plan_json;
  int64_t train_rows = 0, val_rows = 0, windows = 0;
  std::string source;        // "text: a.txt, b.txt" or "self-generated"
  double capture_seconds = 0, fit_seconds = 0, total_seconds = 0;
  double fisher_seconds = 0;  // of capture_seconds: the backward passes (CalibrateOptions::fisher)
  int64_t peak_rss_bytes = 0;
  std::string table() const;  // the per-layer table, human readable
  std::string json() const;   // the same as JSON
};

// --predictor-inputs: "narrow", "wide", "wide-keys" or "wide-values" -> o.wide_keys / wide_values
// (Error on any other name), and back (the fit report's notes).
void set_predictor_inputs(CalibrateOptions& o, std::string_view name);
const char* predictor_inputs_name(const CalibrateOptions& o);

// Runs the whole calibration and returns the adapters (not yet written). `progress(stage, done,
// total)` reports "capture" and "fit" progress.
Adapters calibrate(const CalibrateOptions& opt, CalibrateReport* report,
                   const std::function<void(const char*, int64_t, int64_t)>& progress = {});

// The capture stage alone (what every calibration method starts from): loads the model, calls
// check_width(C) with its KV width (settings that depend on the model fail there, before the
// capture), fills *model_fp (when given) and returns the exact pre-RoPE K/V rows of the sampled
// windows (or self-generated text), train windows first. Sets report's source, windows, rows and
// capture_seconds.
KvSamples capture_samples(const CalibrateOptions& opt, CalibrateReport* report,
                          const std::function<void(const char*, int64_t, int64_t)>& progress,
                          const std::function<void(int64_t)>& check_width = {},
                          ModelFingerprint* model_fp = nullptr);

// Seed of the sampler of self-generated sequence i: the 64-bit output of std::seed_seq{seed
// low 32 bits, seed high 32 bits, i} (via std::mt19937_64), so each sequence's text depends on
// (seed, i) only, not on which sequences are decoded together.
uint64_t generation_seed(uint64_t seed, int64_t i);

// A calibration text file (bounded read, checked UTF-8; errors name `calibrate -f`).
std::string read_calibration_text(const std::string& path);

// `count` windows of `window` tokens at seeded, non-overlapping positions of the token stream
// (fewer when the stream is short; Error when it holds less than one window).
std::vector<std::vector<int32_t>> sample_windows(const std::vector<int32_t>& stream, int64_t window, int64_t count,
                                                 uint64_t seed);

// Peak resident set size of this process in bytes (VmHWM), 0 if unknown.
int64_t peak_rss_bytes();

}  // namespace aquakv
