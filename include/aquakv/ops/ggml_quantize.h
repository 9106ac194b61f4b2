// Reference quantizers for the 32-value ggml block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
// Owns: turning float rows into those blocks, bit-exact with the `gguf` Python package's
// gguf.quants.quantize (same float32 operation order, fp16 scales rounded to nearest even).
// Not: the block layouts' decoding (ops/ggml_types.h) or KV-cache codecs built on them (quant/).
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"

namespace aquakv {

// Each writes n / 32 blocks (n must be a multiple of 32) to dst; dst needs
// ggml_row_bytes(type, n) bytes. Inputs are expected finite; NaN/inf give unspecified codes
// but never undefined behaviour.
//
// Q8_0: d = max|x| / 127, q = round_half_away(x / d)            (x ~ d*q)
// Q4_0: m = the x with largest |x| (first one), d = m / -8,
//       q = min(15, trunc(x / d + 8.5))                          (x ~ d*(q-8))
// Q4_1: d = (max - min) / 15, q = min(15, trunc((x - min)/d + 0.5))  (x ~ d*q + min)
// Q5_0: as Q4_0 with d = m / -16, offset 16.5, q <= 31; the 5th bits go in qh
// Q5_1: as Q4_1 with d = (max - min) / 31, q <= 31
// "/ d" is computed as "* (1/d)" in float32 (1/d = 0 when d == 0), as the reference does.
void quantize_row_q8_0_ref(const float* x, void* dst, int64_t n);
void quantize_row_q4_0_ref(const float* x, void* dst, int64_t n);
void quantize_row_q4_1_ref(const float* x, void* dst, int64_t n);
void quantize_row_q5_0_ref(const float* x, void* dst, int64_t n);
void quantize_row_q5_1_ref(const float* x, void* dst, int64_t n);

// Dispatch by type for the five types above; returns false (writing nothing) for other types.
bool quantize_row_ref(GgmlType type, const float* x, void* dst, int64_t n);

}  // namespace aquakv
