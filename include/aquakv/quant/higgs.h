// The HIGGS codec: Hadamard rotation + per-group scale + Gaussian-optimal vector grid
// (aquakv-algorithm.md section 5). Owns: the HIGGS row format. Not: grids (quant/grid.h),
// the rotation (quant/hadamard.h), nearest search (quant/nearest.h).
//
// For each group of g consecutive channels of a row (g a supported Hadamard order dividing dim):
//   s = ||x_g||_2, stored as the fp16 RMS r = s / sqrt(g) (an RMS cannot overflow fp16 where a
//   norm of many values could);  y = H_g D x_g / s (coordinates have mean square exactly 1);
//   y is cut into g/d sub-vectors, each stored as the index of its nearest grid point.
//   Decode: x_g = D H_g (r sqrt(g) * yhat) / g = D H_g yhat * (r / sqrt(g)).
//   A group whose stored r is 0 (all zero, or below the smallest fp16) decodes to zeros.
// Row layout: dim/g fp16 scales (little-endian), then the row's dim/d codes bit-packed at
// ceil(log2 n) bits each (quant/bitpack.h). Bits per value = 8 * bytes / dim
// = log2(n)/d + 16/g when the codes fill whole bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/quant/codec.h"
#include "aquakv/quant/grid.h"
#include "aquakv/quant/hadamard.h"
#include "aquakv/quant/nearest.h"

namespace aquakv {

namespace detail {
struct SignedPatterns;  // src/quant/higgs_kernels.h
}

class HiggsCodec final : public Codec {
 public:
  // Throws Error when g does not divide dim, g is not a supported Hadamard order, d does not
  // divide g, or the grid is invalid. sign_seed 0 means no sign flips.
  HiggsCodec(int64_t dim, int64_t group, const Grid& grid, uint64_t sign_seed = 0);

  int64_t group() const { return group_; }
  const Grid& grid() const { return grid_; }  // the shared search's copy (see the members)
  int code_bits() const { return code_bits_; }
  uint64_t sign_seed() const { return rot_.sign_seed(); }
  // True when the AVX-512 decoder rebuilds this codec's points from sign patterns (E8P in groups
  // of 192) instead of reading the float table; the decoded bits are the same either way.
  bool has_sign_patterns() const { return patterns_ != nullptr; }

  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;
  void decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const override;
  // Fused with AVX-512 in groups of 192 without sign flips for 2-dimensional grids of 16/64/256
  // points, 4-dimensional grids of 16 points and 8-dimensional grids with 16-bit codes (E8P):
  // the AQUA-KV residual codecs of 192-wide rows; else decode + add. decode takes the same
  // kernel.
  void decode_add(const uint8_t* in, int64_t rows, float* y) const override;
  // Inner basis: u = yhat * r / sqrt(g) per group (the decode before its rotation), T = D H_g
  // per group; T^T = H_g D (H_g is symmetric), the encoder's forward rotation.
  int64_t inner_group() const override { return group_; }
  void decode_inner(const uint8_t* in, int64_t rows, float* u) const override;
  void inner_to_rows(float* u, int64_t rows) const override;
  void transpose_to_inner(float* q, int64_t rows) const override;

 private:
  void gather_row(const uint8_t* packed, float* x) const;
  bool fused192() const;
  void decode_rows(const uint8_t* in, int64_t rows, float* x, bool rotate) const;
  int64_t group_;
  // One search and grid copy per distinct grid in the process (shared_nearest_search), so that
  // the codecs of all layers do not each hold megabytes of a large grid's tables.
  std::shared_ptr<const NearestSearch> search_;
  const Grid& grid_;  // search_->grid()
  int code_bits_;
  int64_t codes_per_row_;
  HadamardRotation rot_;
  uint16_t zero_code_;  // code stored for all-zero groups: the grid point nearest the origin
  // E8P in groups of 192: its points as sign patterns (a 256 KiB table shared by every E8P codec,
  // for the AVX-512 decoder), else null.
  std::shared_ptr<const detail::SignedPatterns> patterns_;
  std::vector<float> byte_table_;  // (256, 4) for d = 2 with 4-bit codes, else empty
};

// The default group size for a width: the largest supported Hadamard order dividing dim and
// <= 1024 (192 -> 192, 576 -> 192, 4096 -> 1024); throws Error when none >= d exists.
int64_t higgs_default_group(int64_t dim);

}  // namespace aquakv
