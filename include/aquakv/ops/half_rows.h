// Batch float <-> IEEE half conversion (round to nearest even, as util/fp16.h). Owns: the
// dispatch between the scalar reference and the F16C kernel (bit-identical: F16C rounds to
// nearest even too). Used wherever rows move between f32 and fp16 storage (caches, codecs).
#pragma once

#include <cstdint>

namespace aquakv {

void floats_to_halves(const float* x, int64_t n, uint16_t* h);
void halves_to_floats(const uint16_t* h, int64_t n, float* x);

// Scalar references (util/fp16.h per element).
void floats_to_halves_ref(const float* x, int64_t n, uint16_t* h);
void halves_to_floats_ref(const uint16_t* h, int64_t n, float* x);

namespace detail {
void floats_to_halves_avx2(const float* x, int64_t n, uint16_t* h);
void halves_to_floats_avx2(const uint16_t* h, int64_t n, float* x);
}  // namespace detail

}  // namespace aquakv
