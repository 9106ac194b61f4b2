// AVX-512 kernels of quant/uniform_kernels.h: codes unpacked, converted and scaled in one pass.
// Per 16 values: the 2W bytes holding their codes are loaded (masked: nothing past them is
// read), each lane picks the 32-bit word its code lies in (vpermd) and shifts it down
// (vpsrlvd), then x = float(code) * s + z with the multiply and the add kept separate (this file
// is built with -ffp-contract=off), exactly the scalar loop of uniform.cpp.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "uniform_kernels.h"

namespace aquakv::detail {
namespace {

// Codes 16*j .. 16*j + 15 of a little-endian bit stream of W-bit codes (LSB first), as int32.
template <int W>
struct Unpack16 {
  __m512i word, shift, mask;
  Unpack16() {
    alignas(64) int32_t w[16], s[16];
    for (int j = 0; j < 16; ++j) {
      w[j] = j * W / 32;
      s[j] = j * W % 32;
    }
    word = _mm512_load_si512(w);
    shift = _mm512_load_si512(s);
    mask = _mm512_set1_epi32((1 << W) - 1);
  }
  __m512 operator()(const uint8_t* p) const {
    const __m512i raw = _mm512_maskz_loadu_epi8(__mmask64((uint64_t(1) << (2 * W)) - 1), p);
    __m512i v = _mm512_permutexvar_epi32(word, raw);
    v = _mm512_and_si512(_mm512_srlv_epi32(v, shift), mask);
    return _mm512_cvtepi32_ps(v);
  }
};

template <int W>
void token_rows(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int64_t row_bytes, float* x) {
  const Unpack16<W> unpack;
  const int64_t ng = dim / group;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * row_bytes;
    const uint8_t* codes = o + 4 * ng;
    float* xr = x + r * dim;
    for (int64_t k = 0; k < ng; ++k) {
      const __m512 s = _mm512_set1_ps(_cvtsh_ss(uint16_t(o[4 * k] | o[4 * k + 1] << 8)));
      const __m512 z = _mm512_set1_ps(_cvtsh_ss(uint16_t(o[4 * k + 2] | o[4 * k + 3] << 8)));
      for (int64_t i = k * group; i < (k + 1) * group; i += 16)
        _mm512_storeu_ps(xr + i, _mm512_add_ps(_mm512_mul_ps(unpack(codes + i * W / 8), s), z));
    }
  }
}

template <int W>
void channel_block(const uint8_t* block, int64_t rows, int64_t dim, float* x) {
  const Unpack16<W> unpack;
  // Scales then zeros, dim fp16 each, then the codes. Widths up to 256 keep s, z on the stack.
  alignas(64) float sz[2 * 256];
  const bool small = dim <= 256;
  if (small) {
    for (int64_t c = 0; c < 2 * dim; c += 16)
      _mm512_store_ps(sz + c, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * c))));
  }
  const uint8_t* codes = block + 4 * dim;
  for (int64_t t = 0; t < rows; ++t) {
    const uint8_t* ct = codes + t * dim * W / 8;
    float* xt = x + t * dim;
    for (int64_t c = 0; c < dim; c += 16) {
      const __m512 s = small ? _mm512_load_ps(sz + c) : _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * c)));
      const __m512 z = small ? _mm512_load_ps(sz + dim + c)
                             : _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * (dim + c))));
      _mm512_storeu_ps(xt + c, _mm512_add_ps(_mm512_mul_ps(unpack(ct + c * W / 8), s), z));
    }
  }
}

}  // namespace

bool uniform_avx512_fits(int bits, int64_t dim, int64_t group, bool token_axis) {
  return (bits == 2 || bits == 4 || bits == 8) && dim % 16 == 0 && (!token_axis || group % 16 == 0);
}

void decode_token_rows_avx512(const uint8_t* in, int64_t rows, int64_t dim, int64_t group, int bits,
                              int64_t row_bytes, float* x) {
  switch (bits) {
    case 2: return token_rows<2>(in, rows, dim, group, row_bytes, x);
    case 4: return token_rows<4>(in, rows, dim, group, row_bytes, x);
    default: return token_rows<8>(in, rows, dim, group, row_bytes, x);
  }
}

void decode_channel_block_avx512(const uint8_t* block, int64_t rows, int64_t dim, int bits, float* x) {
  switch (bits) {
    case 2: return channel_block<2>(block, rows, dim, x);
    case 4: return channel_block<4>(block, rows, dim, x);
    default: return channel_block<8>(block, rows, dim, x);
  }
}

}  // namespace aquakv::detail
