// LoRC's plan from the model's weights (`aquakv calibrate --method lorc`): per layer, the SVD of
// the key and value projections, a rank per layer from the progressive rule, and the bases the
// cache projects on (kv/lorc_plan.h). Owns: the SVD by eigendecomposition, the condition
// numbers, the rank schedule and the fit report. Not: the file (kv/lorc_plan.h), the cache.
//
// SVD: W (C x d, rows = output channels) = U S V^T; U and S^2 are the eigenvectors and
// eigenvalues of the C x C matrix W W^T (accumulated and decomposed in double). The basis of
// rank r is U's r leading columns; kappa = sigma_max / sigma_min (sigma_min floored at
// 1e-12 sigma_max).
//
// Rank schedule (after Zhang et al. 2024, "progressive compression"): an error made in layer l
// is carried through every later layer, so a layer's sensitivity is the cumulative condition
// number prod_{j >= l} kappa_j of its stream; the shallow layers, with the largest products, are
// compressed least. aquakv normalises the logarithm of that product,
//     s_l = (L_l - min L) / (max L - min L),   L_l = sum_{j >= l} ln kappa_j,
// (the product itself spans tens of orders of magnitude, so a linear normalisation would leave
// every layer but the first at the floor), and keeps the share a_l = lo + (hi - lo) s_l of the C
// dimensions, rank round(a_l C) clamped to [1, C], with (lo, hi) such that the mean share is
// `keep`: hi = 1 and lo = (keep - mean s) / (1 - mean s) when that is >= 0, else lo = 0 and
// hi = keep / mean s. "uniform" keeps round(keep C) everywhere (the paper's baseline).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/engine/model.h"
#include "aquakv/kv/lorc_plan.h"

namespace aquakv {

struct LorcFitOptions {
  double keep = 0.5;        // mean share of each stream's C dimensions kept, in (0, 1]
  bool progressive = true;  // the cumulative-condition schedule; false: the same rank everywhere
  bool keys = true, values = true;  // streams compressed (the other keeps rank C: exact up to fp16)
};

// The SVD of one projection: singular values descending and U's columns in that order.
struct LorcSvd {
  int64_t C = 0;
  std::vector<double> sigma;  // (C) descending, >= 0
  std::vector<double> u;      // (C, C) row-major, column j = left singular vector j
  double condition() const;
};

// w: (C, d) row-major f32.
LorcSvd lorc_svd(const float* w, int64_t C, int64_t d);

// Per-layer ranks for one stream from its per-layer condition numbers (>= 1), as above.
// Errors: keep outside (0, 1], C < 1, no layers.
std::vector<int64_t> lorc_ranks(const std::vector<double>& condition, double keep, bool progressive, int64_t C);

// A stream of rank r from an SVD; `bias` (C values, or null = zero) becomes the offset.
LorcStream lorc_stream(const LorcSvd& svd, int64_t rank, const float* bias);

// Share of the projection's energy sum sigma^2 kept by the r leading components.
double lorc_energy_kept(const LorcSvd& svd, int64_t rank);

// The whole plan for a model. Refuses models whose keys are not X W_k^T (+ bias): per-head key
// normalisation (QK-norm, e.g. Gemma 3) leaves the keys outside W_k's column space.
LorcPlan fit_lorc(const Model& model, const LorcFitOptions& opt);

// What the plan loses on real rows: per layer, the relative squared error
// sum ||x - x^||^2 / sum ||x||^2 of the captured keys and values (every captured row, before
// RoPE, fp16 latents as the cache stores them). LoRC itself never looks at data; this is the
// diagnostic (`calibrate --method lorc -f TEXT`).
std::vector<std::array<double, 2>> lorc_projection_error(const LorcPlan& plan, const KvSamples& samples);

// A data-aware variant (not the paper's): each stream's offset becomes the mean of the captured
// rows, so that the low-rank projection acts on x - mean and the part of the mean outside the
// basis, which every token shares and attention therefore adds coherently, is kept exactly.
void lorc_center_on(LorcPlan& plan, const KvSamples& samples);

}  // namespace aquakv
