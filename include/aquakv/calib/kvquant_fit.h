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
//    intervals). KVQuant weights the k-means by Fisher information (squared gradients of the
//    loss); aquakv has no backward pass, so the weights are uniform here.
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
};

struct KvQuantLayerStats {
  double key_rel_mse = 0, value_rel_mse = 0;  // validation rows (train rows when there are none)
};

// 1-D k-means: `k` strictly increasing centroids minimizing sum (x - c(x))^2 over x (sorted
// ascending, finite) by Lloyd's iterations from the (i + 0.5)/k quantiles. Fewer distinct
// values than k: the missing centroids are spread above the largest value.
std::vector<float> kmeans_1d(const std::vector<float>& sorted, int k, int max_iters);

QuantTables fit_kvquant(const KvSamples& s, const KvQuantFitOptions& opt,
                          std::vector<KvQuantLayerStats>* stats = nullptr);

}  // namespace aquakv
