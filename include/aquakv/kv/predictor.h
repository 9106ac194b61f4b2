// AffineMap: one AQUA-KV cross-layer predictor y = x W + b (full rank, W (in, out)) or
// y = (x U) V + b (reduced rank r: U (in, r), V (r, out)). Owns: the predictor's storage and its
// application to blocks of rows. Not: fitting (calib/ridge.h) or the file format (kv/adapters.h).
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/ops/affine_rows.h"

namespace aquakv {

struct AffineMap {
  int64_t in = 0;           // input width (C for keys, 2C for values)
  int64_t out = 0;          // output width (C)
  int64_t rank = 0;         // 0: full rank (w used); r > 0: factors u, v used
  std::vector<float> w;     // (in, out) row-major, full rank only
  std::vector<float> u;     // (in, rank) row-major, reduced rank only
  std::vector<float> v;     // (rank, out) row-major, reduced rank only
  std::vector<float> bias;  // (out)

  // An empty map predicts zero (the "no predictor" case: the residual is the value itself).
  bool empty() const { return out == 0; }
  // Multiply-adds per row: in*out, or rank*(in+out).
  int64_t macs_per_row() const { return rank > 0 ? rank * (in + out) : in * out; }
  int64_t n_params() const { return int64_t(w.size() + u.size() + v.size() + bias.size()); }

  // Y (n, out) = concat(inputs) (n, in) -> map. Bit-identical for any grouping of rows (see
  // ops/affine_rows.h). `scratch` holds the (n, rank) intermediate of reduced-rank maps.
  void apply(int64_t n, const AffineInput* inputs, int n_inputs, float* y, int64_t ldy,
             std::vector<float>& scratch) const;
};

}  // namespace aquakv
