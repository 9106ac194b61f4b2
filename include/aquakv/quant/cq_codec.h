// Coupled Quantization's row codec (Zhang et al. 2024, "KV Cache is 1 Bit Per Channel"): the
// channels of a row are cut into groups of c contiguous channels, and each group is replaced by
// the index of the nearest of 2^b centroids in R^c (a learned codebook per layer, stream and
// group; calib/cq_fit.h). Owns: the row layout and encode/decode. Not: fitting or storing the
// codebooks (kv/quant_tables.h).
//
// Row layout: dim / c codes of b bits (quant/bitpack.h), nothing else: bits per value = b / c
// (8 channels x 8 bits: 1 bit per value; 4 x 8: 2 bits). Nearest = least squared Euclidean
// distance, ties to the lower index. The codebooks are per model, not per token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aquakv/quant/codec.h"

namespace aquakv {

class CqCodec final : public Codec {
 public:
  // codebooks: [dim / c groups][2^bits centroids][c] floats. Throws Error when c does not
  // divide dim, bits is outside 1..12, the size is wrong or a value is not finite.
  CqCodec(std::string name, int64_t dim, int64_t channels, int bits, std::vector<float> codebooks);
  int64_t channels() const { return c_; }
  int bits() const { return bits_; }
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;

  // Index of the centroid of `book` ([2^bits][c]) nearest to v (c values).
  static uint16_t nearest(const float* book, int64_t n, int64_t c, const float* v);

 private:
  int64_t c_;
  int bits_;
  std::vector<float> books_;
};

}  // namespace aquakv
