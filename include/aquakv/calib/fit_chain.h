// The sequential AQUA-KV predictor fit over captured keys and values (reference section 6).
// Owns: the chain that reconstructs layer 0 with its policy, then for l = 1..L-1 fits the key
// predictor on K̂_{l-1} -> K_l, reconstructs K̂_l with the key codec, fits the value predictor
// on [K̂_l ; V̂_{l-1}] -> V_l and reconstructs V̂_l -- so every predictor sees exactly what it
// will see in the cache -- and the per-layer quality table. Not: capturing K/V (calib/capture.h)
// or running the model (calib/calibrate.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/quant/codec.h"

namespace aquakv {

// Captured pre-RoPE keys and values: per layer, (rows, C) fp16; the first n_train rows are the
// training rows, the rest validation.
struct KvSamples {
  int64_t n_layers = 0, width = 0;
  int64_t n_train = 0, n_val = 0;
  std::vector<std::vector<uint16_t>> k, v;  // [layer] -> (n_train + n_val, C)
  int64_t rows() const { return n_train + n_val; }
};

struct ChainOptions {
  std::shared_ptr<const Codec> key_codec, value_codec, layer0_codec;  // layer0 may be "fp16"
  int64_t rank = 0;         // 0: full rank
  double damping = 1e-3;    // lambda = damping * mean(diag A)
  bool fit_keys = true;     // false: no key predictors (ablation: values only)
  bool fit_values = true;   // false: no value predictors (ablation: keys only)
  // Called with each layer's reconstructions K̂_l, V̂_l of all rows ((rows, C) each); tests
  // compare them with the cache's.
  std::function<void(int, const std::vector<float>&, const std::vector<float>&)> on_layer;
};

// One row of the per-layer table. Predictor quality: relative MSE of the prediction
// ||P(X) - Y||^2 / ||Y||^2 (1 when there is no predictor); reconstruction quality: relative MSE
// of the cache's reconstruction (prediction + decoded residual) on validation rows.
struct LayerFitStats {
  int layer = 0;
  double k_train = 1, k_val = 1, v_train = 1, v_val = 1;
  double k_recon_val = 0, v_recon_val = 0;
  double seconds = 0;
};

// progress(layer_done, n_layers) is called after each layer.
std::vector<LayerPredictors> fit_chain(const KvSamples& data, const ChainOptions& opt,
                                       std::vector<LayerFitStats>* stats,
                                       const std::function<void(int, int)>& progress = {});

}  // namespace aquakv
