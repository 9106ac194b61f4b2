// KVQuant calibration: from captured pre-RoPE K/V rows (calib/calibrate.h capture_samples) to
// the per-layer tables of kv/quant_tables.h. Owns: per-channel key ranges, the outlier rule
// applied to calibration rows, and 1-D k-means for the non-uniform datatypes. Not: capture, the
// file format, the row codec.
//
// Per layer (train rows only; validation rows give the report's held-out error):
//  - keys: per channel c, lo/hi = the q and 1-q quantiles of the channel (q = outlier fraction
//    / 2), offset = (hi + lo) / 2, scale = (hi - lo) / 2 (so about the outlier fraction of a
//    channel's values lies outside [-1, 1]);
//  - the datatype of each stream: k-means with 2^bits centroids on the normalized non-outlier
//    values u of every train row (the codec's outlier rule, quant/kvquant_codec.h), Lloyd's
//    iterations from quantile starts on the sorted values (exact in 1-D: clusters are
//    intervals). With `fisher` (KVQuant's sensitivity weighting) each value weighs its
//    element's Fisher information (KvSamples::fk / fv, calib/fisher.h) times the square of its
//    normalization scale -- so the k-means minimizes the loss change f * (x - x^)^2 summed --
//    and the first token of each window is left out (the cache keeps it exact); without, every
//    value weighs 1.
//  - `uniform` replaces the k-means datatype by 2^bits evenly spaced levels -1 + 2i / (2^bits - 1)
//    on the same normalized values (the endpoints are the normalization range, as a min-max
//    uniform quantizer): everything else -- per-channel pre-RoPE keys, per-token values, the
//    outliers, the exact first token -- stays, so the pair isolates what the non-uniform
//    datatype buys (the KVQuant paper's int-vs-nuq ablation).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/quant_tables.h"

namespace aquakv {

struct KvQuantFitOptions {
  int bits = 3;
  double outlier_fraction = 0.01;  // per row kept exact: k = ceil(fraction * C)
  int max_iters = 100;
  bool fisher = false;  // weigh the k-means by the samples' Fisher information
  bool uniform = false;  // evenly spaced levels instead of the k-means datatype (ablation)
};

// The `uniform` datatype: k evenly spaced levels from -1 to 1 (k >= 2).
std::vector<float> uniform_levels(int k);

struct KvQuantLayerStats {
  double key_rel_mse = 0, value_rel_mse = 0;  // validation rows (train rows when there are none)
};

// 1-D k-means: `k` strictly increasing centroids minimizing sum w(x) (x - c(x))^2 over x (sorted
// ascending, finite; w: one non-negative weight per value, or null for w = 1) by Lloyd's
// iterations (each centroid moves to its interval's weighted mean; a cluster without weight
// stays) from the (i + 0.5)/k quantiles of the values. Fewer distinct values than k: the
// missing centroids are spread above the largest value.
std::vector<float> kmeans_1d(const std::vector<float>& sorted, int k, int max_iters,
                             const std::vector<float>* weights = nullptr);

QuantTables fit_kvquant(const KvSamples& s, const KvQuantFitOptions& opt,
                          std::vector<KvQuantLayerStats>* stats = nullptr);

}  // namespace aquakv
