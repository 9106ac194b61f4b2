// Coupled Quantization row codec (quant/cq_codec.h).
#include "aquakv/quant/cq_codec.h"

#include <cmath>

#include "aquakv/quant/bitpack.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

int64_t checked_bytes(const std::string& name, int64_t dim, int64_t c, int bits, const std::vector<float>& books) {
  if (c < 1 || dim % c != 0) fail("codec {}: {} channels per group must divide the width {}", name, c, dim);
  if (bits < 1 || bits > 12) fail("codec {}: bits per code must be in [1, 12], got {}", name, bits);
  const size_t want = size_t(dim / c) << bits;
  if (books.size() != want * size_t(c))
    fail("codec {}: expected {} codebook values ({} groups x {} centroids x {}), got {}", name, want * size_t(c),
         dim / c, int64_t(1) << bits, c, books.size());
  for (size_t i = 0; i < books.size(); ++i)
    if (!std::isfinite(books[i])) fail("codec {}: codebook value {} is not finite", name, i);
  return packed_bytes(dim / c, bits);
}

}  // namespace

CqCodec::CqCodec(std::string name, int64_t dim, int64_t channels, int bits, std::vector<float> codebooks)
    : Codec(name, dim, 1, checked_bytes(name, dim, channels, bits, codebooks)),
      c_(channels),
      bits_(bits),
      books_(std::move(codebooks)) {}

uint16_t CqCodec::nearest(const float* book, int64_t n, int64_t c, const float* v) {
  uint16_t best = 0;
  float best_d = INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    float d = 0;
    for (int64_t i = 0; i < c; ++i) {
      const float e = v[i] - book[j * c + i];
      d += e * e;
    }
    if (d < best_d) {
      best_d = d;
      best = uint16_t(j);
    }
  }
  return best;
}

void CqCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  const int64_t G = dim() / c_, n = int64_t(1) << bits_;
  std::vector<uint16_t> codes(static_cast<size_t>(G));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < G; ++g)
      codes[size_t(g)] = nearest(books_.data() + g * n * c_, n, c_, x + r * dim() + g * c_);
    pack_bits(codes.data(), G, bits_, out + r * block_bytes());
  }
}

void CqCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  const int64_t G = dim() / c_, n = int64_t(1) << bits_;
  std::vector<uint16_t> codes(static_cast<size_t>(G));
  for (int64_t r = 0; r < rows; ++r) {
    unpack_bits(in + r * block_bytes(), G, bits_, codes.data());
    for (int64_t g = 0; g < G; ++g) {
      const float* cen = books_.data() + (g * n + codes[size_t(g)]) * c_;
      for (int64_t i = 0; i < c_; ++i) x[r * dim() + g * c_ + i] = cen[i];
    }
  }
}

}  // namespace aquakv
