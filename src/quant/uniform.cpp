// Uniform min-max codec (format in quant/block_codecs.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "aquakv/quant/bitpack.h"
#include "aquakv/quant/block_codecs.h"
#include "uniform_kernels.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {

namespace {

int64_t block_bytes_for(int64_t dim, int bits, int64_t group, UniformAxis axis) {
  if (bits < 1 || bits > 8) fail("uniform: bits must be in [1, 8], got {}", bits);
  if (dim < 1) fail("uniform: width must be >= 1, got {}", dim);
  if (group < 1 || group > 65536) fail("uniform: group size must be in [1, 65536], got {}", group);
  if (axis == UniformAxis::kToken) {
    if (dim % group != 0) fail("uniform: group size g={} does not divide the width {}", group, dim);
    return 4 * (dim / group) + packed_bytes(dim, bits);
  }
  return 4 * dim + packed_bytes(group * dim, bits);
}

std::string uniform_spec(int bits, int64_t group, UniformAxis axis) {
  return fmt::format("uniform:{}:g{}:{}", bits, group, axis == UniformAxis::kToken ? "token" : "channel");
}

struct Params {
  uint16_t scale16, zero16;
  float scale, zero, inv;
};

Params params_for(float mn, float mx, int qmax) {
  Params p;
  p.zero16 = fp32_to_fp16(mn);
  p.scale16 = fp32_to_fp16((mx - mn) / float(qmax));
  p.zero = fp16_to_fp32(p.zero16);
  p.scale = fp16_to_fp32(p.scale16);
  p.inv = p.scale > 0 && std::isfinite(p.scale) ? 1.0f / p.scale : 0.0f;
  return p;
}

uint16_t quantize(float x, const Params& p, int qmax) {
  const float t = std::floor((x - p.zero) * p.inv + 0.5f);
  if (!(t > 0)) return 0;  // also NaN
  return t >= float(qmax) ? uint16_t(qmax) : uint16_t(t);
}

void put16(uint8_t* o, uint16_t h) {
  o[0] = uint8_t(h);
  o[1] = uint8_t(h >> 8);
}
uint16_t get16(const uint8_t* o) { return uint16_t(o[0] | (o[1] << 8)); }

}  // namespace

UniformCodec::UniformCodec(int64_t dim, int bits, int64_t group, UniformAxis axis)
    : Codec(uniform_spec(bits, group, axis), dim, axis == UniformAxis::kToken ? 1 : group,
            block_bytes_for(dim, bits, group, axis)),
      bits_(bits),
      group_(group),
      axis_(axis) {}

void UniformCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  const int64_t dim = this->dim(), g = group_;
  const int qmax = (1 << bits_) - 1;
  thread_local std::vector<uint16_t> codes;
  if (axis_ == UniformAxis::kToken) {
    const int64_t ng = dim / g;
    codes.resize(size_t(dim));
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      uint8_t* o = out + r * block_bytes();
      for (int64_t k = 0; k < ng; ++k) {
        const float* xg = xr + k * g;
        float mn = xg[0], mx = xg[0];
        for (int64_t i = 1; i < g; ++i) {
          mn = std::min(mn, xg[i]);
          mx = std::max(mx, xg[i]);
        }
        const Params p = params_for(mn, mx, qmax);
        put16(o + 4 * k, p.scale16);
        put16(o + 4 * k + 2, p.zero16);
        for (int64_t i = 0; i < g; ++i) codes[size_t(k * g + i)] = quantize(xg[i], p, qmax);
      }
      pack_bits(codes.data(), dim, bits_, o + 4 * ng);
    }
    return;
  }
  // Per-channel: blocks of g rows; statistics per channel over the block.
  codes.resize(size_t(g * dim));
  std::vector<Params> ps(static_cast<size_t>(dim));
  for (int64_t b = 0; b < rows / g; ++b) {
    const float* xb = x + b * g * dim;
    uint8_t* o = out + b * block_bytes();
    for (int64_t c = 0; c < dim; ++c) {
      float mn = xb[c], mx = xb[c];
      for (int64_t t = 1; t < g; ++t) {
        mn = std::min(mn, xb[t * dim + c]);
        mx = std::max(mx, xb[t * dim + c]);
      }
      ps[size_t(c)] = params_for(mn, mx, qmax);
      put16(o + 2 * c, ps[size_t(c)].scale16);
      put16(o + 2 * (dim + c), ps[size_t(c)].zero16);
    }
    for (int64_t t = 0; t < g; ++t) {
      for (int64_t c = 0; c < dim; ++c) codes[size_t(t * dim + c)] = quantize(xb[t * dim + c], ps[size_t(c)], qmax);
    }
    pack_bits(codes.data(), g * dim, bits_, o + 4 * dim);
  }
}

void UniformCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  const int64_t dim = this->dim(), g = group_;
  // Codes become floats first (byte tables for 2/4/8 bits), then x = code * scale + zero
  // (AVX2 kernels in uniform_avx2.cpp: the same multiply and add per element). 2/4/8-bit codes
  // of widths and groups that are multiples of 8 (16 for AVX-512) unpack, convert and scale in
  // one pass instead.
  const bool avx2 = simd_at_least(SimdLevel::kAvx2);
  const bool avx512 = simd_at_least(SimdLevel::kAvx512) &&
                      detail::uniform_avx512_fits(bits_, dim, g, axis_ == UniformAxis::kToken);
  const bool avx2_fused = !avx512 && avx2 && detail::uniform_avx2_fits(bits_, dim, g, axis_ == UniformAxis::kToken);
  if (axis_ == UniformAxis::kToken) {
    if (avx512) return detail::decode_token_rows_avx512(in, rows, dim, g, bits_, block_bytes(), x);
    if (avx2_fused) return detail::decode_token_rows_avx2(in, rows, dim, g, bits_, block_bytes(), x);
    const int64_t ng = dim / g;
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* o = in + r * block_bytes();
      float* xr = x + r * dim;
      unpack_bits_float(o + 4 * ng, dim, bits_, xr);
      for (int64_t k = 0; k < ng; ++k) {
        const float s = fp16_to_fp32(get16(o + 4 * k)), z = fp16_to_fp32(get16(o + 4 * k + 2));
        float* xg = xr + k * g;
        if (avx2) detail::scale_offset_avx2(xg, g, s, z);
        else for (int64_t i = 0; i < g; ++i) xg[i] = xg[i] * s + z;
      }
    }
    return;
  }
  thread_local std::vector<float> sc, zr;
  sc.resize(size_t(dim));
  zr.resize(size_t(dim));
  for (int64_t b = 0; b < rows / g; ++b) {
    const uint8_t* o = in + b * block_bytes();
    float* xb = x + b * g * dim;
    if (avx512) {
      detail::decode_channel_block_avx512(o, g, dim, bits_, xb);
      continue;
    }
    if (avx2_fused) {
      detail::decode_channel_block_avx2(o, g, dim, bits_, xb);
      continue;
    }
    for (int64_t c = 0; c < dim; ++c) {
      sc[size_t(c)] = fp16_to_fp32(get16(o + 2 * c));
      zr[size_t(c)] = fp16_to_fp32(get16(o + 2 * (dim + c)));
    }
    const float* s = sc.data();
    const float* z = zr.data();
    unpack_bits_float(o + 4 * dim, g * dim, bits_, xb);
    if (avx2) {
      detail::scale_offset_channels_avx2(xb, g, dim, s, z);
      continue;
    }
    for (int64_t t = 0; t < g; ++t) {
      float* xt = xb + t * dim;
      for (int64_t c = 0; c < dim; ++c) xt[c] = xt[c] * s[c] + z[c];
    }
  }
}

}  // namespace aquakv
