#include "aquakv/kv/predictor.h"
#include "aquakv/util/check.h"

#include <cstddef>

namespace aquakv {

void AffineMap::apply(int64_t n, const AffineInput* inputs, int n_inputs, float* y, int64_t ldy,
                      std::vector<float>& scratch) const {
  AQUAKV_CHECK(!empty());
  if (rank == 0) {
    affine_rows(n, inputs, n_inputs, w.data(), out, bias.data(), y, ldy);
    return;
  }
  if (int64_t(scratch.size()) < n * rank) scratch.resize(std::size_t(n * rank));
  affine_rows(n, inputs, n_inputs, u.data(), rank, nullptr, scratch.data(), rank);
  const AffineInput mid{scratch.data(), rank, rank};
  affine_rows(n, &mid, 1, v.data(), out, bias.data(), y, ldy);
}

}  // namespace aquakv
