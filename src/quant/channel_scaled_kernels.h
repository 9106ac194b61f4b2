// Private to src/quant: the per-channel scale loops of ChannelScaledCodec (channel_scaled_codec.cpp)
// in AVX2 and AVX-512. Each is one multiply (and one add) per element in the scalar loops'
// order, never fused into an FMA, so every level gives the scalar loops' bits.
#pragma once

#include <cstdint>

namespace aquakv::detail {

// x[r*C + c] *= s[c] for r < rows, c < C.
void scale_channels_avx2(float* x, const float* s, int64_t rows, int64_t C);
void scale_channels_avx512(float* x, const float* s, int64_t rows, int64_t C);
// y[r*C + c] = y[r*C + c] + x[r*C + c] * s[c]: the product rounded, then the sum.
void scale_add_channels_avx2(const float* x, const float* s, int64_t rows, int64_t C, float* y);
void scale_add_channels_avx512(const float* x, const float* s, int64_t rows, int64_t C, float* y);

}  // namespace aquakv::detail
