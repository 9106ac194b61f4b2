// Coupled Quantization calibration: per layer, stream and group of c contiguous channels, a
// codebook of 2^b centroids in R^c by k-means on captured pre-RoPE K/V rows (calib/calibrate.h
// capture_samples), into the tables of kv/quant_tables.h. Owns: the c-dimensional k-means and
// the row subsampling. Not: capture, the file format, the row codec (quant/cq_codec.h).
//
// k-means: k-means++ seeding (seeded generator), then Lloyd's iterations (assign each point to its
// nearest centroid, move each centroid to its points' mean; an empty centroid keeps its place)
// until no assignment changes or max_iters. The paper also has a Fisher-guided variant (points
// weighted by squared gradients of the loss); aquakv has no backward pass, so points weigh the
// same (the paper's uniform variant).
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/quant_tables.h"

namespace aquakv {

struct CqFitOptions {
  int64_t channels = 4;       // c
  int bits = 8;               // b: bits per code (2^b centroids)
  int64_t max_rows = 4096;    // training rows used per layer (a seeded sample when more)
  int max_iters = 25;
  uint64_t seed = 1;
};

struct CqLayerStats {
  double key_rel_mse = 0, value_rel_mse = 0;  // validation rows (train rows when there are none)
};

// k-means of n points in R^c (x: [n][c]) with k centroids; returns [k][c]. n >= 1.
std::vector<float> kmeans_nd(const std::vector<float>& x, int64_t c, int64_t k, int max_iters, uint64_t seed);

QuantTables fit_cq(const KvSamples& s, const CqFitOptions& opt, std::vector<CqLayerStats>* stats = nullptr);

}  // namespace aquakv
