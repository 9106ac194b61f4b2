// Scalar reference and dispatch of affine_rows (see ops/affine_rows.h for the summation order).
#include "aquakv/ops/affine_rows.h"

#include <cmath>

#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

void ref_rows(int64_t r0, int64_t r1, const AffineInput* inputs, int n_inputs, const float* w,
              int64_t n_out, const float* bias, float* y, int64_t ldy) {
  for (int64_t i = r0; i < r1; ++i) {
    float* yi = y + i * ldy;
    for (int64_t j = 0; j < n_out; ++j) {
      float acc = bias != nullptr ? bias[j] : 0.0f;
      const float* wk = w + j;
      for (int s = 0; s < n_inputs; ++s) {
        const float* xi = inputs[s].x + i * inputs[s].ld;
        for (int64_t k = 0; k < inputs[s].k; ++k, wk += n_out) acc = std::fma(xi[k], *wk, acc);
      }
      yi[j] = acc;
    }
  }
}

}  // namespace

void affine_rows_ref(int64_t n, const AffineInput* inputs, int n_inputs, const float* w,
                     int64_t n_out, const float* bias, float* y, int64_t ldy) {
  ref_rows(0, n, inputs, n_inputs, w, n_out, bias, y, ldy);
}

void affine_rows(int64_t n, const AffineInput* inputs, int n_inputs, const float* w,
                 int64_t n_out, const float* bias, float* y, int64_t ldy) {
  if (n <= 0 || n_out <= 0) return;
  int64_t k_total = 0;
  for (int s = 0; s < n_inputs; ++s) k_total += inputs[s].k;
  const bool avx2 = simd_at_least(SimdLevel::kAvx2);
  auto body = [&](int64_t r0, int64_t r1) {
    if (avx2) {
      detail::affine_rows_avx2(r0, r1, inputs, n_inputs, w, n_out, bias, y, ldy);
    } else {
      ref_rows(r0, r1, inputs, n_inputs, w, n_out, bias, y, ldy);
    }
  };
  // Threads only pay off above ~1 MFLOP; row ranges are multiples of the 6-row tile.
  if (n * k_total * n_out < (int64_t(1) << 20)) {
    body(0, n);
  } else {
    parallel_for(n, body, 48);
  }
}

}  // namespace aquakv
