// AVX2 kernels of quant/uniform_kernels.h. Multiply then add (no fused multiply-add), as the
// scalar loops in uniform.cpp, so both give identical floats. The fused decoders unpack 8 codes
// of W bits from their W bytes (one 16/32/64-bit load: codes are little-endian, LSB first):
// the word is broadcast to 8 lanes and lane j shifted right by j*W (W = 2, 4), or the 8 bytes
// are widened (W = 8); then x = float(code) * s + z.
#include <immintrin.h>

// Keep the multiply and the add separate (this file is built with -mfma, where GCC may fuse
// them; code * scale is exact anyway for codes of <= 8 bits and fp16 scales).
#pragma GCC optimize("fp-contract=off")

#include <cstring>

#include "uniform_kernels.h"

namespace aquakv::detail {

void scale_offset_avx2(float* x, int64_t n, float s, float z) {
  const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), vz));
  for (; i < n; ++i) x[i] = x[i] * s + z;
}

void scale_offset_channels_avx2(float* x, int64_t rows, int64_t dim, const float* s, const float* z) {
  for (int64_t t = 0; t < rows; ++t) {
    float* xt = x + t * dim;
    int64_t c = 0;
    for (; c + 8 <= dim; c += 8)
      _mm256_storeu_ps(xt + c, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(xt + c), _mm256_loadu_ps(s + c)), _mm256_loadu_ps(z + c)));
    for (; c < dim; ++c) xt[c] = xt[c] * s[c] + z[c];
  }
}

namespace {

// Codes 8j .. 8j + 7 of a W-bit stream starting at p (p = the byte of code 8j), as floats.
template <int W>
inline __m256 unpack8(const uint8_t* p) {
  if constexpr (W == 8) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  } else {
    uint32_t w = 0;
    std::memcpy(&w, p, W);  // 8 codes of W bits: W bytes (2 or 4), nothing past them is read
    const __m256i shift = W == 2 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14) : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(w)), shift), _mm256_set1_epi32((1 << W) - 1));
    return _mm256_cvtepi32_ps(v);
  }
}

inline float half_at(const uint8_t* p) {
  return _cvtsh_ss(uint16_t(p[0] | p[1] << 8));
}

template <int W>
void token_rows(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int64_t row_bytes, float* x) {
  const int64_t ng = dim / group;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * row_bytes;
    const uint8_t* codes = o + 4 * ng;
    float* xr = x + r * dim;
    for (int64_t k = 0; k < ng; ++k) {
      const __m256 s = _mm256_set1_ps(half_at(o + 4 * k)), z = _mm256_set1_ps(half_at(o + 4 * k + 2));
      for (int64_t i = k * group; i < (k + 1) * group; i += 8)
        _mm256_storeu_ps(xr + i, _mm256_add_ps(_mm256_mul_ps(unpack8<W>(codes + i * W / 8), s), z));
    }
  }
}

template <int W>
void channel_block(const uint8_t* block, int64_t rows, int64_t dim, float* x) {
  // Scales then zeros, dim fp16 each, then the codes. Widths up to 256 keep s, z on the stack.
  alignas(32) float sz[2 * 256];
  const bool small = dim <= 256;
  if (small) {
    for (int64_t c = 0; c < 2 * dim; c += 8)
      _mm256_store_ps(sz + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 * c))));
  }
  const uint8_t* codes = block + 4 * dim;
  for (int64_t t = 0; t < rows; ++t) {
    const uint8_t* ct = codes + t * dim * W / 8;
    float* xt = x + t * dim;
    for (int64_t c = 0; c < dim; c += 8) {
      const __m256 s = small ? _mm256_load_ps(sz + c) : _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 * c)));
      const __m256 z = small ? _mm256_load_ps(sz + dim + c)
                             : _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2 * (dim + c))));
      _mm256_storeu_ps(xt + c, _mm256_add_ps(_mm256_mul_ps(unpack8<W>(ct + c * W / 8), s), z));
    }
  }
}

}  // namespace

bool uniform_avx2_fits(int bits, int64_t dim, int64_t group, bool token_axis) {
  return (bits == 2 || bits == 4 || bits == 8) && dim % 8 == 0 && (!token_axis || group % 8 == 0);
}

void decode_token_rows_avx2(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int bits,
                            int64_t row_bytes, float* x) {
  switch (bits) {
    case 2: return token_rows<2>(in, rows, dim, group, row_bytes, x);
    case 4: return token_rows<4>(in, rows, dim, group, row_bytes, x);
    default: return token_rows<8>(in, rows, dim, group, row_bytes, x);
  }
}

void decode_channel_block_avx2(const uint8_t* block, int64_t rows, int64_t dim, int bits, float* x) {
  switch (bits) {
    case 2: return channel_block<2>(block, rows, dim, x);
    case 4: return channel_block<4>(block, rows, dim, x);
    default: return channel_block<8>(block, rows, dim, x);
  }
}

}  // namespace aquakv::detail
