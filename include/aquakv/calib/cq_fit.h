// Coupled Quantization calibration: per layer, stream and group of c contiguous channels, a
// codebook of 2^b centroids in R^c by k-means on captured pre-RoPE K/V rows (calib/calibrate.h
// capture_samples), into the tables of kv/quant_tables.h. Owns: the c-dimensional k-means and
// the row subsampling. Not: capture, the file format, the row codec (quant/cq_codec.h).
//
// k-means: k-means++ seeding (seeded generator), then Lloyd's iterations (assign each point to its
// nearest centroid, move each centroid to its points' mean; an empty centroid keeps its place)
// until no assignment changes or max_iters. With `fisher` (the paper's Fisher-guided centroid
// learning) each point weighs the Fisher information of its c elements summed (KvSamples::fk /
// fv, calib/fisher.h): seeding draws the first centroid by weight and the others by weight
// times squared distance, and centroids move to
// their points' weighted mean (a cluster without weight stays); without, points weigh the same.
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
  bool fisher = false;  // weigh the points by the samples' Fisher information
};

struct CqLayerStats {
  double key_rel_mse = 0, value_rel_mse = 0;  // validation rows (train rows when there are none)
};

// k-means of n points in R^c (x: [n][c]) with k centroids, points weighted by w (n
// non-negative weights; null: all 1); returns [k][c]. n >= 1.
std::vector<float> kmeans_nd(const std::vector<float>& x, int64_t c, int64_t k, int max_iters, uint64_t seed,
                             const std::vector<float>* w = nullptr);

QuantTables fit_cq(const KvSamples& s, const CqFitOptions& opt, std::vector<CqLayerStats>* stats = nullptr);

}  // namespace aquakv
