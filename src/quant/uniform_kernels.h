// Private to src/quant: the uniform codec's decode kernels (AVX2 versions of loops in
// uniform.cpp; same operations per element, so the same results).
#pragma once

#include <cstdint>

namespace aquakv::detail {

// x[i] = x[i] * s + z for i < n (one per-token group).
void scale_offset_avx2(float* x, int64_t n, float s, float z);
// x[t*dim + c] = x[t*dim + c] * s[c] + z[c] for t < rows, c < dim (a per-channel block).
void scale_offset_channels_avx2(float* x, int64_t rows, int64_t dim, const float* s, const float* z);

}  // namespace aquakv::detail
