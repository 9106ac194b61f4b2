// Small codecs for tests of the caches and calibration, independent of quant/'s codecs.
#pragma once

#include <cmath>
#include <cstring>
#include <string>

#include "aquakv/quant/codec.h"
#include "aquakv/util/fp16.h"

namespace aquakv {

// fp16 per value: lossless for fp16 inputs.
class HalfCodec final : public Codec {
 public:
  explicit HalfCodec(int64_t dim) : Codec("test-f16", dim, 1, 2 * dim) {}
  void encode(const float* x, int64_t rows, uint8_t* out) const override {
    for (int64_t i = 0; i < rows * dim(); ++i) {
      const uint16_t h = fp32_to_fp16(x[i]);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
  void decode(const uint8_t* in, int64_t rows, float* x) const override {
    for (int64_t i = 0; i < rows * dim(); ++i) {
      uint16_t h;
      std::memcpy(&h, in + 2 * i, 2);
      x[i] = fp16_to_fp32(h);
    }
  }
};

// Lossy: per row an f32 absmax scale and `bits`-bit signed codes stored one per byte.
class CoarseCodec final : public Codec {
 public:
  CoarseCodec(int64_t dim, int bits, int64_t block = 1)
      : Codec("test-coarse" + std::to_string(bits) + "b" + std::to_string(block), dim, block, block * (dim + 4)), q_((1 << (bits - 1)) - 1) {}
  void encode(const float* x, int64_t rows, uint8_t* out) const override {
    for (int64_t r = 0; r < rows; ++r, x += dim(), out += dim() + 4) {
      float m = 0;
      for (int64_t j = 0; j < dim(); ++j) m = std::max(m, std::abs(x[j]));
      const float s = m / float(q_);
      std::memcpy(out, &s, 4);
      for (int64_t j = 0; j < dim(); ++j) out[4 + j] = uint8_t(int8_t(s > 0 ? std::lround(x[j] / s) : 0));
    }
  }
  void decode(const uint8_t* in, int64_t rows, float* x) const override {
    for (int64_t r = 0; r < rows; ++r, x += dim(), in += dim() + 4) {
      float s;
      std::memcpy(&s, in, 4);
      for (int64_t j = 0; j < dim(); ++j) x[j] = float(int8_t(in[4 + j])) * s;
    }
  }

 private:
  int q_;
};

}  // namespace aquakv
