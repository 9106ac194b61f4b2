// Private to src/quant: HIGGS decoder kernels (AVX2 versions of loops in higgs.cpp).
#pragma once

#include <cstdint>

namespace aquakv::detail {

// out[4b + j] = table[4 * bytes[b] + j] * f for b < nbytes, j < 4.
void gather_byte_table_scaled_avx2(const float* table, const uint8_t* bytes, int64_t nbytes, float f,
                                   float* out);
// x[i] *= f.
void scale_avx2(float* x, int64_t n, float f);

}  // namespace aquakv::detail
