// Ridge regression with intercept from streamed normal equations: the predictor fit of AQUA-KV
// calibration. Owns: accumulating A = X1^T X1 and B = X1^T Y in double (X1 = [X 1]), the damped
// solve, the reduced-rank variant and the fit-quality measures (relative MSE, equivalent bits).
// Not: where X and Y come from (calib/calibrate.h) or how predictors are stored (kv/).
//
// Fit: W1 = (A + lambda I)^-1 B with lambda = damping * mean(diag A) (the intercept entry is
// damped too), i.e. the minimiser of ||X1 W1 - Y||^2 + lambda ||W1||^2. W1's last row is the bias.
// Reduced rank r: with Sxx the centred covariance of X, the fitted values' centred covariance is
// M = W^T Sxx W (out x out); projecting W on the top-r eigenvectors V_r of M gives
// W_r = (W V_r) V_r^T, the best rank-r approximation of the fitted values (reduced-rank
// regression), and the bias b_r = ybar - xbar W_r keeps the intercept unrestricted.
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/calib/linalg.h"
#include "aquakv/kv/predictor.h"
#include "aquakv/ops/affine_rows.h"

namespace aquakv {

class NormalEquations {
 public:
  NormalEquations(int64_t in, int64_t out);

  // Adds n rows: X = concat(inputs) (n, in), Y (n, out) rows with stride ldy.
  void add(int64_t n, const AffineInput* inputs, int n_inputs, const float* y, int64_t ldy);
  // Adds another accumulator of the same shape (sums of disjoint row sets).
  void merge(const NormalEquations& other);

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  int64_t rows() const { return rows_; }
  const std::vector<double>& a() const { return a_; }  // (in+1, in+1), full symmetric
  const std::vector<double>& b() const { return b_; }  // (in+1, out)
  double y_sq() const { return yy_; }                   // sum of Y's squares

 private:
  int64_t in_, out_;
  int64_t rows_ = 0;
  std::vector<double> a_, b_;
  double yy_ = 0;
  std::vector<double> xs_, ys_;  // chunk staging in double
};

struct RidgeOptions {
  double damping = 1e-3;  // lambda = damping * mean(diag A)
  int64_t rank = 0;       // 0: full rank
};

struct RidgeFit {
  AffineMap map;
  double lambda = 0;
  SolveMethod method = SolveMethod::kCholesky;
};

RidgeFit fit_ridge(const NormalEquations& ne, const RidgeOptions& opt = {});

// Sum of squared errors of `map` on the rows summarised by `ne`, from the statistics alone:
// ||X1 W1 - Y||^2 = tr(W1^T A W1) - 2 tr(W1^T B) + ||Y||^2 (exact up to double rounding).
double sse_from_stats(const NormalEquations& ne, const AffineMap& map);

// Accumulates ||pred - y||^2 and ||y||^2 over rows (for validation data).
struct ErrorStats {
  double err_sq = 0;
  double y_sq = 0;
  int64_t rows = 0;
  void add(int64_t n, const float* pred, int64_t ldp, const float* y, int64_t ldy, int64_t width);
  double rel_mse() const { return y_sq > 0 ? err_sq / y_sq : 0.0; }
};

// "Equivalent bits" of a relative MSE: -log4(rel_mse) (the Gaussian rate-distortion rate).
double equivalent_bits(double rel_mse);

}  // namespace aquakv
