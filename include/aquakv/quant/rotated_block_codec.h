// Rotated ggml block codecs (q8_0r, q4_0r, q4_1r): every head of a row is turned by the
// orthonormal Hadamard matrix H_h / sqrt(h) before it is cut into llama.cpp's 32-value blocks,
// and turned back after decoding -- the way llama.cpp's quantized caches store rotated K and V.
// Owns: the rotation around the block format and its spec. Not: the block math (ops/) or the
// unrotated block codec (quant/block_codecs.h).
//
// Why it helps: a head with a few large channels makes every block that holds one spend its
// scale on that outlier. R = H_h / sqrt(h) is orthonormal (R R^T = I) and spreads each channel
// over all h coordinates, so rotated blocks are close to Gaussian and their absmax scales shrink.
// Because R is orthonormal, the decoded error e = R^T e' (e' the block codec's error in the
// rotated basis) has the same Euclidean norm per head: ||x - x^||_2 = ||e'||_2, so the per-block
// bounds of the block format hold, in norm, per head.
//
// Layout: exactly the unrotated format's bytes (dim/32 blocks per row) of R-rotated heads; bits
// per value are the block format's (8.5, 4.5, 5.0). Spec: "<type>r:h<H>", type q8_0, q4_0 or
// q4_1, H the head size (a multiple of 32 with a Hadamard matrix, quant/hadamard.h, dividing
// dim); without ":h<H>" H is the largest power of two <= 128 dividing dim.
#pragma once

#include <cstdint>
#include <string_view>

#include "aquakv/quant/codec.h"
#include "aquakv/quant/hadamard.h"

namespace aquakv {

class RotatedBlockCodec final : public Codec {
 public:
  // kind: "q8_0", "q4_0" or "q4_1"; head: the rotation size H (0 = the default above).
  // Throws Error naming the spec for an unknown kind, a width that is not a multiple of 32, or
  // an H that is not a multiple of 32, has no Hadamard matrix, or does not divide dim.
  RotatedBlockCodec(std::string_view kind, int64_t dim, int64_t head = 0);
  int64_t head() const { return rot_.size(); }
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;
  // Inner basis (quant/codec.h): u = the blocks decoded without turning back, T = R per head
  // (R = H_h / sqrt(h) is symmetric and orthonormal, so T^T = T and T T = I). Attention then
  // scores and sums in the rotated basis and turns each query and output once per step.
  int64_t inner_group() const override { return rot_.size(); }
  void decode_inner(const uint8_t* in, int64_t rows, float* u) const override;
  void inner_to_rows(float* u, int64_t rows) const override;
  void transpose_to_inner(float* q, int64_t rows) const override;
  // The block type (GgmlType id) the rotated rows are stored in.
  uint32_t ggml_type() const { return type_; }

 private:
  uint32_t type_;  // GgmlType id
  HadamardRotation rot_;
};

}  // namespace aquakv
