// Per-layer, per-stream bit allocation for AQUA-KV under a budget (`aquakv calibrate --bits B`).
// Owns: the loss proxy of coding one layer's key or value residual with a candidate codec
// (measured on calibration rows during a probe run of the chain) and the exact allocation that
// minimises the summed proxy at a budget of bytes per token. Not: the chain itself
// (calib/fit_chain.h) or the file that stores the plan (kv/adapters.h).
//
// Loss proxy, in units of the attention block's squared output error:
//   value stream of layer l:  sum_c u_c E(e_c^2)
//   key stream of layer l:    sum_h [ sum_{c in h} w_c E(e_c^2) ] * tv_h * key_weight
// where w_c = KvSamples::q2 / q_rows (the mean square logit error a key error e causes is
// sum_c w_c e_c^2, summed over the query heads), u_c = KvSamples::wo2 (the output projection's
// weight of channel c, summed over the query heads reading it), and
// tv_h = sum_{c in h} (u_c / G) Var(v_c) over the layer's values (G query heads per KV head): a
// logit error delta moves a head's output by about delta * (v - o), so its square is delta^2
// times the spread of the values around the attention average, which tv_h bounds, carried
// through W_o. Without output weights u_c = G and tv_h = sum_{c in h} Var(v_c) (the attention
// output before W_o). Errors of one layer's reconstruction on later layers'
// predictions are not counted (the probe run codes every layer with the default codecs).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/quant/codec.h"

namespace aquakv {

// Multiple-choice knapsack, solved exactly by dynamic programming over total bytes: item i
// takes one option j with cost[i][j] and bytes[i][j] >= 0; returns the choice per item that
// minimises the summed cost with summed bytes <= budget (first minimum: lowest option index
// on ties, items in order). Fails with one line when even the cheapest options exceed budget.
std::vector<int> allocate_min_cost(const std::vector<std::vector<double>>& cost,
                                   const std::vector<std::vector<int64_t>>& bytes, int64_t budget);

class BitPlanner {
 public:
  // `candidates`: per-token codecs of the KV width (e.g. higgs:4x16, higgs2, higgs3, higgs4).
  // max_rows: training rows (evenly strided) each candidate is measured on. weighted = false
  // (or no query statistics in `samples`): plain squared error for keys and values alike.
  BitPlanner(const KvSamples& samples, std::vector<std::shared_ptr<const Codec>> candidates,
             bool weighted = true, double key_weight = 1.0, int64_t max_rows = 4096);

  // Measure each candidate wrapped in the channel scales the chain will fit (ChainOptions::
  // scale_keys / scale_values), so the plan prices the codecs as they will be used.
  void set_channel_scales(bool keys, bool values) { scale_keys_ = keys; scale_values_ = values; }
  // Divide each layer's costs by the energy of its attention output, sum_c u_c E(v_c^2) (u_c as
  // in the value proxy): relative instead of absolute output errors. The residual stream grows
  // with depth and every next layer sees it through an RMS norm, so the same absolute error
  // weighs less late; the layer's output energy stands in for the stream's (not captured).
  void set_layer_norm(bool on) { layer_norm_ = on; }

  // The fit_chain hook (ChainOptions::on_residual): measures every candidate on the stream's
  // residual target - pred of layer `layer`.
  void measure(int layer, bool key, const std::vector<float>& target, const std::vector<float>& pred);

  // The plan for an average of `bits` bits per value over all layers and both streams, layer 0
  // coded by `layer0_bytes_per_row` bytes per row (per stream). Returns per layer (index 0
  // unused) the candidate index for keys and values; fails when a layer was not measured or
  // the budget is below the cheapest plan.
  std::vector<std::array<int, 2>> plan(double bits, int64_t layer0_bytes_per_row) const;

  // cost(l, stream 0 = key / 1 = value, candidate) as measured.
  double cost(int layer, int stream, int candidate) const { return cost_[size_t(layer)][size_t(stream)][size_t(candidate)]; }
  const std::vector<std::shared_ptr<const Codec>>& candidates() const { return cand_; }
  // Bits per value (codes + scales) of an allocation over all layers (layer 0 included).
  double bits_per_value(const std::vector<std::array<int, 2>>& plan, int64_t layer0_bytes_per_row) const;

 private:
  int64_t L_, C_, hd_, hkv_, group_, max_rows_, n_train_;
  double key_weight_;
  bool scale_keys_ = false, scale_values_ = false, layer_norm_ = false;
  std::vector<double> out_energy_;         // [layer] sum_c u_c E(v_c^2)
  std::vector<std::vector<double>> q_;     // [layer][C] query weights for the channel scales
  std::vector<std::shared_ptr<const Codec>> cand_;
  std::vector<std::vector<double>> w_;     // [layer][C] query weights (empty: unweighted keys)
  std::vector<std::vector<double>> tv_;    // [layer][KV head] value spread
  std::vector<std::vector<double>> wo_;    // [layer][C] output-projection weights (empty: none)
  std::vector<std::array<std::vector<double>, 2>> cost_;  // [layer][stream][candidate]
};

}  // namespace aquakv
