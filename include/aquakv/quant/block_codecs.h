// The baseline codecs next to HIGGS: fp16, uniform asymmetric min-max (KIVI-style, per-token or
// per-channel groups), and llama.cpp's q8_0 / q4_0 / q4_1 cache blocks. Owns: their byte layouts.
// Not: the codec contract (quant/codec.h) or the ggml block math (ops/ggml_types.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "aquakv/quant/codec.h"

namespace aquakv {

// IEEE half per value, row = dim little-endian halves (16 bits per value).
class Fp16Codec final : public Codec {
 public:
  explicit Fp16Codec(int64_t dim);
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;
  void decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const override;
};

// Asymmetric min-max quantization with `bits` (1..8) bits per value. A group of values with
// minimum m and maximum M stores zero z = fp16(m) and scale s = fp16((M - m) / (2^bits - 1)),
// codes q = clamp(round((x - z) / s), 0, 2^bits - 1) (q = 0 when s = 0), decoded as q * s + z.
//  - UniformAxis::kToken (per-token, KIVI values): groups of `group` consecutive channels of a
//    row. Row layout: dim/group (scale, zero) fp16 pairs, then dim codes bit-packed.
//    block_rows = 1. Bits per value = bits + 32/group.
//  - UniformAxis::kChannel (per-channel, KIVI keys): each channel over a block of `group` rows.
//    Block layout: dim fp16 scales, dim fp16 zeros, then group*dim codes (row-major) bit-packed.
//    block_rows = group. Bits per value = bits + 32/group.
enum class UniformAxis { kToken, kChannel };

class UniformCodec final : public Codec {
 public:
  // Throws Error for bits outside 1..8, group < 1, or (token axis) group not dividing dim.
  UniformCodec(int64_t dim, int bits, int64_t group, UniformAxis axis);
  int bits() const { return bits_; }
  int64_t group() const { return group_; }
  UniformAxis axis() const { return axis_; }
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;

 private:
  int bits_;
  int64_t group_;
  UniformAxis axis_;
};

// llama.cpp's 32-value cache blocks, bit-exact with ggml / the gguf package:
// q8_0: fp16 scale + 32 int8 (34 bytes, 8.5 bits per value);
// q4_0: fp16 scale + 32 4-bit codes (18 bytes, 4.5 bits per value);
// q4_1: fp16 scale + fp16 minimum + 32 4-bit codes (20 bytes, 5 bits per value).
// A row is dim/32 blocks (dim must be a multiple of 32). Wraps ops/ggml_quantize.h and
// ops/ggml_types.h.
class GgmlBlockCodec final : public Codec {
 public:
  // kind: "q8_0", "q4_0" or "q4_1". Throws Error when dim is not a multiple of 32 or kind is unknown.
  GgmlBlockCodec(std::string_view kind, int64_t dim);
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;
  // The GgmlType id of the blocks (attention on the codes reads them directly, ops/attn_qblock.h).
  uint32_t ggml_type() const { return type_; }

 private:
  uint32_t type_;  // GgmlType id
};

}  // namespace aquakv
