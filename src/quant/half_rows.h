// Private to src/quant: batch float <-> IEEE half conversion (round to nearest even), scalar
// reference and F16C version, bit-identical (F16C rounds to nearest even as fp16.h does).
#pragma once

#include <cstdint>

namespace aquakv::detail {

void floats_to_halves(const float* x, int64_t n, uint16_t* h);
void halves_to_floats(const uint16_t* h, int64_t n, float* x);
void floats_to_halves_avx2(const float* x, int64_t n, uint16_t* h);
void halves_to_floats_avx2(const uint16_t* h, int64_t n, float* x);

}  // namespace aquakv::detail
