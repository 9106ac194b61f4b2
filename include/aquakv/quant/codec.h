// The codec interface every KV-cache format uses, and the factory that builds codecs from spec
// strings. Owns: the contract between a cache and its quantizer -- rows of `dim` floats in,
// bytes out, batch oriented, 64-bit sizes, one virtual call per batch. Not: the formats
// themselves (quant/higgs.h, quant/uniform.h, quant/block_codecs.h) or where bytes are stored.
//
// Contract
//  - Input is `rows` contiguous rows of dim() floats ([rows][dim], row-major).
//  - Rows are encoded in blocks of block_rows() rows (1 for row codecs; B tokens for codecs that
//    group along the token axis, e.g. KIVI per-channel keys); `rows` must be a multiple of it
//    (asserted). A block encodes to exactly block_bytes() bytes; blocks are laid out back to
//    back, so rows r..r+block_rows()-1 of block b start at byte b * block_bytes().
//  - bits_per_value() = 8 * block_bytes() / (block_rows() * dim()): everything stored (codes,
//    scales, zero points, byte padding) is counted.
//  - Codecs are immutable after construction: encode/decode are const and thread-safe; callers
//    parallelise over disjoint row ranges. Construction validates every parameter and throws
//    Error; encode/decode never throw.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace aquakv {

class Codec {
 public:
  virtual ~Codec() = default;
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  // Canonical spec string (every parameter spelled out), e.g. "higgs:2x16:g192".
  const std::string& spec() const { return spec_; }
  int64_t dim() const { return dim_; }
  int64_t block_rows() const { return block_rows_; }
  int64_t block_bytes() const { return block_bytes_; }
  double bits_per_value() const { return 8.0 * double(block_bytes_) / double(block_rows_ * dim_); }
  // Bytes taken by `rows` rows (a multiple of block_rows()).
  int64_t encoded_bytes(int64_t rows) const { return rows / block_rows_ * block_bytes_; }

  // x: [rows][dim] floats -> out: encoded_bytes(rows) bytes.
  virtual void encode(const float* x, int64_t rows, uint8_t* out) const = 0;
  // in: encoded_bytes(rows) bytes -> x: [rows][dim] floats.
  virtual void decode(const uint8_t* in, int64_t rows, float* x) const = 0;
  // Same, writing IEEE half (round to nearest even). The default decodes to float and converts.
  virtual void decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const;
  // y: [rows][dim] floats += the decoded rows, element by element (y + x: the reconstruction
  // "prediction + decoded residual"). The default decodes a few rows into a buffer and adds;
  // a codec may fuse the two, with the same bits.
  virtual void decode_add(const uint8_t* in, int64_t rows, float* y) const;

  // Inner basis (optional; code-domain attention). A codec with one decodes a row as x = T u,
  // where u = decode_inner(codes) is cheap (no transform) and T is a fixed linear map acting on
  // groups of inner_group() consecutive channels. Then q . x = (T^T q) . u and sum_j p_j x_j =
  // T (sum_j p_j u_j): attention can score keys and sum values in the inner basis and apply T
  // once per query per step instead of once per stored row. inner_group() == 0: no inner basis
  // (the three calls below throw).
  virtual int64_t inner_group() const { return 0; }
  // in: encoded_bytes(rows) bytes -> u: [rows][dim] floats with decode(in) = T u row by row.
  virtual void decode_inner(const uint8_t* in, int64_t rows, float* u) const;
  // In place on [rows][dim]: u <- T u (to_rows) and q <- T^T q (transpose_to_inner).
  virtual void inner_to_rows(float* u, int64_t rows) const;
  virtual void transpose_to_inner(float* q, int64_t rows) const;

 protected:
  Codec(std::string spec, int64_t dim, int64_t block_rows, int64_t block_bytes)
      : spec_(std::move(spec)), dim_(dim), block_rows_(block_rows), block_bytes_(block_bytes) {}

 private:
  std::string spec_;
  int64_t dim_;
  int64_t block_rows_;
  int64_t block_bytes_;
};

// Which KV stream a codec is for; only names that mean different formats for keys and values
// (kivi2, kivi3, kivi4) care.
enum class KvStream { kAny, kKey, kValue };

// Builds a codec for rows of `dim` values from a spec string (throws Error on a bad spec):
//   fp16                         16-bit IEEE half, exact for halves
//   q8_0, q4_0, q4_1             llama.cpp block formats (32 values/block; dim % 32 == 0)
//   q8_0r, q4_0r, q4_1r[:h<H>]   the same blocks of every head of H channels turned by the
//                                orthonormal Hadamard matrix H_H / sqrt(H) first
//                                (quant/rotated_block_codec.h); H defaults to the largest power
//                                of two <= 128 dividing dim
//   uniform:<bits>[:g<G>][:token|:channel]
//                                asymmetric min-max, 1..8 bits, fp16 scale and zero point per
//                                group; token (default): groups of G channels within a row;
//                                channel: each channel over blocks of G rows. G defaults to 32.
//   kivi2, kivi3, kivi4          KIVI: keys uniform:<b>:g32:channel, values uniform:<b>:g32:token
//                                (needs stream kKey or kValue)
//   higgs:<d>x<n>[:g<G>][:seed<S>][:grid=<file.f32le>]
//                                HIGGS (Hadamard group G, grid of n points in R^d, fp16 scale per
//                                group); G defaults to the largest supported Hadamard order
//                                dividing dim and <= 1024; seed S > 0 adds random sign flips;
//                                grid= loads a grid file instead of the built-in grid.
//   higgs2, higgs3, higgs4       higgs:2x16, higgs:2x64, higgs:2x256
std::unique_ptr<Codec> make_codec(std::string_view spec, int64_t dim,
                                  KvStream stream = KvStream::kAny);

// Relative round-trip error of `rows` rows (a whole number of blocks): ||x - D(E(x))||^2 /
// ||x||^2 with float64 sums, 0 for x = 0. What calibration reports per layer and stream.
double codec_relative_mse(const Codec& codec, const float* x, int64_t rows);

}  // namespace aquakv
