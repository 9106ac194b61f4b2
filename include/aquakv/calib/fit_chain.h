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
  // Query statistics that weigh key errors where attention feels them: for layer l and KV
  // channel c, q2[l][c] = sum over recorded query rows of sum over the query heads reading c's
  // KV head of (scale * q_c)^2, averaged over the two channels of each RoPE pair (pair energy
  // is unchanged by the rotation, so the weight applies to pre-RoPE key errors); q_rows rows.
  // A key error e of a token then moves the logits by sum_c (q2[l][c] / q_rows) e_c^2 in mean
  // square (diagonal of the queries' second moment). Empty when not recorded.
  std::vector<std::vector<double>> q2;
  int64_t q_rows = 0;
  // Output-projection weights of value errors: for layer l and KV channel c (head h, dim i),
  // wo2[l][c] = sum over the query heads g reading h of ||column g*hd + i of W_o||^2, so a value
  // error e reaching every such head's output moves the attention block's output by
  // sum_c wo2[l][c] e_c^2 in square (diagonal of W_o^T W_o). Empty when unknown.
  std::vector<std::vector<double>> wo2;
  // Diagonal Fisher information of the leading fisher_rows() training rows (calib/fisher.h,
  // whole windows; all of them unless calibration limits it): per layer, (fisher_rows(), C)
  // squared gradients of the window's loss with respect to each pre-RoPE key / value element;
  // empty when not computed. rows_per_window: rows of each captured window (0: unknown).
  std::vector<std::vector<float>> fk, fv;
  int64_t rows_per_window = 0;
  int64_t fisher_rows() const { return fk.empty() || width == 0 ? 0 : int64_t(fk[0].size()) / width; }
  int64_t n_kv_heads = 0;  // KV heads (width = n_kv_heads * head dim); 0: unknown
  int64_t q_group = 0;     // query heads per KV head; 0: unknown
  int64_t rows() const { return n_train + n_val; }
};

struct ChainOptions {
  std::shared_ptr<const Codec> key_codec, value_codec, layer0_codec;  // layer0 may be "fp16"
  int64_t rank = 0;         // 0: full rank (both streams, unless key_rank / value_rank say)
  // Per-stream ranks: -1 = `rank`. Reduced-rank maps (x U) V cost rank * (in + C)
  // multiply-adds per token instead of in * C, which lets wide inputs fit today's budget.
  int64_t key_rank = -1, value_rank = -1;
  int64_t key_rank_or_default() const { return key_rank >= 0 ? key_rank : rank; }
  int64_t value_rank_or_default() const { return value_rank >= 0 ? value_rank : rank; }
  double damping = 1e-3;    // lambda = damping * mean(diag A)
  bool fit_keys = true;     // false: no key predictors (ablation: values only)
  bool fit_values = true;   // false: no value predictors (ablation: keys only)
  // Called with each layer's reconstructions K̂_l, V̂_l of all rows ((rows, C) each); tests
  // compare them with the cache's.
  std::function<void(int, const std::vector<float>&, const std::vector<float>&)> on_layer;
  // Bit plan: per-layer residual codecs of layers >= 1 (empty, or one entry per layer; entry 0
  // and null entries: key_codec / value_codec), as the cache takes them.
  std::vector<std::shared_ptr<const Codec>> layer_key_codecs, layer_value_codecs;
  // Called for layers >= 1 and each stream (key = true first) with the stream's true rows and
  // their prediction ((rows, C) each; zeros without a predictor) before the residual is coded:
  // the bit planner measures there what each candidate codec would cost (calib/bit_plan.h).
  std::function<void(int layer, bool key, const std::vector<float>& target, const std::vector<float>& pred)> on_residual;
  // Channel scales (quant/channel_scaled_codec.h) of layers >= 1, fitted on the training rows'
  // residuals: s_c^2 = sqrt(w_c) / sigma_c, sigma_c^2 the residual's mean square on channel c,
  // w_c the query weight (KvSamples::q2; keys) or the output-projection weight (KvSamples::wo2,
  // values; 1 when unknown), geometric mean 1. Stored in the
  // layer's LayerPredictors.
  bool scale_keys = false, scale_values = false;
  // Wide predictor inputs (layers >= 1), per stream: keys from [K̂_{l-1} ; V̂_{l-1}] (2C inputs)
  // instead of K̂_{l-1}; values from [K̂_l ; V̂_{l-1} ; K̂_{l-1}] (3C) instead of [K̂_l ; V̂_{l-1}].
  // The maps' input widths say which inputs they read (kv/adapters.h), so the cache needs no
  // other flag.
  bool wide_keys = false, wide_values = false;
};

// One row of the per-layer table. Predictor quality: relative MSE of the prediction
// ||P(X) - Y||^2 / ||Y||^2 (1 when there is no predictor); reconstruction quality: relative MSE
// of the cache's reconstruction (prediction + decoded residual) on validation rows.
struct LayerFitStats {
  int layer = 0;
  double k_train = 1, k_val = 1, v_train = 1, v_val = 1;
  double k_recon_val = 0, v_recon_val = 0;
  std::string k_codec, v_codec;  // the codecs that coded this layer's keys and values
  double seconds = 0;
};

// The channel scales of ChainOptions::scale_keys / scale_values for coding y - pred ((rows, C)
// each; the first n_train rows are used): s_c = (sqrt(w_c) / sigma_c)^(1/2), geometric mean 1;
// sigma and w floored at 1e-6 of their largest values so an idle channel gets a finite scale.
// w: C query weights, or null for 1.
std::vector<float> channel_scales(const std::vector<float>& y, const std::vector<float>& pred, int64_t n_train,
                                  int64_t C, const std::vector<double>* w);

// progress(layer_done, n_layers) is called after each layer.
std::vector<LayerPredictors> fit_chain(const KvSamples& data, const ChainOptions& opt,
                                       std::vector<LayerFitStats>* stats,
                                       const std::function<void(int, int)>& progress = {});

}  // namespace aquakv
