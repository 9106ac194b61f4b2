// Private to src/quant: the uniform codec's decode kernels (AVX2 and AVX-512 versions of loops
// in uniform.cpp; same operations per element, so the same results).
#pragma once

#include <cstdint>

namespace aquakv::detail {

// x[i] = x[i] * s + z for i < n (one per-token group).
void scale_offset_avx2(float* x, int64_t n, float s, float z);
// x[t*dim + c] = x[t*dim + c] * s[c] + z[c] for t < rows, c < dim (a per-channel block).
void scale_offset_channels_avx2(float* x, int64_t rows, int64_t dim, const float* s, const float* z);

// AVX2, unpacking included (uniform_avx2.cpp): the AVX-512 kernels' work 8 values at a time, for
// widths of 2, 4 and 8 bits when dim (and per-token groups) are multiples of 8.
bool uniform_avx2_fits(int bits, int64_t dim, int64_t group, bool token_axis);
void decode_token_rows_avx2(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int bits,
                            int64_t row_bytes, float* x);
void decode_channel_block_avx2(const uint8_t* block, int64_t rows, int64_t dim, int bits, float* x);

// AVX-512, unpacking included (uniform_avx512.cpp). Serves widths of 2, 4 and 8 bits when every
// run of 16 values starts on a byte (dim, and per-token groups, multiples of 16).
bool uniform_avx512_fits(int bits, int64_t dim, int64_t group, bool token_axis);
// Per-token rows: `rows` blocks of row_bytes (ng = dim/group pairs of fp16 scale and zero, then
// the codes) -> x (rows x dim).
void decode_token_rows_avx512(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int bits,
                              int64_t row_bytes, float* x);
// One per-channel block (dim fp16 scales s, dim fp16 zeros z, then the codes of rows x dim
// values) -> x[t*dim + c] = code * s[c] + z[c].
void decode_channel_block_avx512(const uint8_t* block, int64_t rows, int64_t dim, int bits, float* x);

}  // namespace aquakv::detail
