// KVQuant's row codec (Hooper et al. 2024, "KVQuant"): a non-uniform b-bit datatype (2^b sorted
// centroids learned per layer by k-means on calibration data) on normalized values, with
// dense-and-sparse outliers: the k values of a row that lie farthest out are kept exactly (fp16)
// in a sparse side list, counted in the bits. Owns: the row layout and encode/decode. Not: how
// the centroids and key ranges are fitted (calib/kvquant_fit.h) or stored (kv/kvquant_file.h).
//
// Normalization (u: the value in the datatype's domain, nominally [-1, 1]):
//  - keys, per channel (KVQuant quantizes pre-RoPE keys per channel): u = (x - o_c) / s_c with
//    o_c, s_c fixed per channel from calibration, so a token is coded as soon as it arrives;
//  - values, per token: o = fp16((max + min) / 2), s = fp16((max - min) / 2) over the row's
//    non-outlier values, stored with the row.
// Outliers: the k = outliers_per_row values with the largest |x - o_c| / s_c (keys) or
// |x - mean(row)| (values); ties to the lower channel. Every other value decodes to the
// centroid nearest to its u (ties to the lower one) times s plus o.
//
// Row layout: [values only: fp16 o, fp16 s] [k x (channel index: 1 byte if dim <= 256 else 2,
// little-endian; fp16 value)] [dim b-bit codes, quant/bitpack.h] (outliers' codes are 0).
// Bits per value = b + (32 [values] + k * (8 or 16 + 16)) / dim.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "aquakv/quant/codec.h"

namespace aquakv {

struct KvQuantParams {
  int bits = 3;                    // 1..8
  std::vector<float> centroids;    // 2^bits, strictly increasing
  bool per_channel = false;        // true: keys (offset/scale below); false: values (per token)
  std::vector<float> offset, scale;  // per_channel: dim each, scale > 0
  int64_t outliers_per_row = 0;    // k, 0 <= k < dim
};

// The normalization and outlier rule above for one row x of dim values (p.centroids unused):
// writes u (dim; 0 at outliers), the k outlier channels in ascending order, and the row's
// (o, s) (per-token; 0 and 1 for per-channel). The codec and the calibration share it.
void kvquant_normalize_row(const KvQuantParams& p, int64_t dim, const float* x, float* u,
                           int32_t* outliers, float* o, float* s);

class KvQuantCodec final : public Codec {
 public:
  // `name` goes into spec() (e.g. "kvquant3:key:l5"). Throws Error when a parameter is out of
  // range (bits, centroid count or order, non-finite values, offset/scale sizes, scale <= 0, k).
  KvQuantCodec(std::string name, int64_t dim, KvQuantParams params);
  const KvQuantParams& params() const { return p_; }
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;

  // Bytes of one row for these settings (the formula above).
  static int64_t row_bytes(int64_t dim, int bits, bool per_channel, int64_t outliers);

 private:
  void encode_row(const float* x, uint8_t* out) const;
  void decode_row(const uint8_t* in, float* x) const;
  uint16_t nearest(float u) const;

  KvQuantParams p_;
  std::vector<float> mid_;  // 2^bits - 1 midpoints between neighbouring centroids
  int idx_bytes_;
};

}  // namespace aquakv
