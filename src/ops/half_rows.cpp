// Scalar references and dispatch of ops/half_rows.h; the F16C kernels are in half_rows_avx2.cpp.
#include "aquakv/ops/half_rows.h"

#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {

void floats_to_halves_ref(const float* x, int64_t n, uint16_t* h) {
  for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(x[i]);
}

void halves_to_floats_ref(const uint16_t* h, int64_t n, float* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = fp16_to_fp32(h[i]);
}

void floats_to_halves(const float* x, int64_t n, uint16_t* h) {
  if (simd_at_least(SimdLevel::kAvx2)) return detail::floats_to_halves_avx2(x, n, h);
  floats_to_halves_ref(x, n, h);
}

void halves_to_floats(const uint16_t* h, int64_t n, float* x) {
  if (simd_at_least(SimdLevel::kAvx2)) return detail::halves_to_floats_avx2(h, n, x);
  halves_to_floats_ref(h, n, x);
}

}  // namespace aquakv
