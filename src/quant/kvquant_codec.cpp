// KVQuant row codec (quant/kvquant_codec.h).
#include "aquakv/quant/kvquant_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "aquakv/quant/bitpack.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
float half(float v) { return fp16_to_fp32(fp32_to_fp16(v)); }

const KvQuantParams& checked(const std::string& name, int64_t dim, const KvQuantParams& p) {
  if (p.bits < 1 || p.bits > 8) fail("codec {}: bits must be in [1, 8], got {}", name, p.bits);
  const size_t n = size_t(1) << p.bits;
  if (p.centroids.size() != n)
    fail("codec {}: expected {} centroids for {} bits, got {}", name, n, p.bits, p.centroids.size());
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(p.centroids[i])) fail("codec {}: centroid {} is not finite", name, i);
    if (i > 0 && !(p.centroids[i] > p.centroids[i - 1]))
      fail("codec {}: centroids must be strictly increasing (centroid {})", name, i);
  }
  if (p.per_channel) {
    if (int64_t(p.offset.size()) != dim || int64_t(p.scale.size()) != dim)
      fail("codec {}: per-channel offset and scale need {} entries, got {} and {}", name, dim,
           p.offset.size(), p.scale.size());
    for (int64_t c = 0; c < dim; ++c)
      if (!std::isfinite(p.offset[size_t(c)]) || !(p.scale[size_t(c)] > 0) || !std::isfinite(p.scale[size_t(c)]))
        fail("codec {}: channel {} has offset {} and scale {} (need finite, scale > 0)", name, c,
             p.offset[size_t(c)], p.scale[size_t(c)]);
  } else if (!p.offset.empty() || !p.scale.empty()) {
    fail("codec {}: per-token normalization takes no per-channel offset/scale", name);
  }
  if (p.outliers_per_row < 0 || p.outliers_per_row >= dim)
    fail("codec {}: outliers per row must be in [0, {}), got {}", name, dim, p.outliers_per_row);
  return p;
}

}  // namespace

int64_t KvQuantCodec::row_bytes(int64_t dim, int bits, bool per_channel, int64_t outliers) {
  const int64_t idx = dim <= 256 ? 1 : 2;
  return (per_channel ? 0 : 4) + outliers * (idx + 2) + packed_bytes(dim, bits);
}

KvQuantCodec::KvQuantCodec(std::string name, int64_t dim, KvQuantParams params)
    : Codec(name, dim, 1,
            row_bytes(dim, checked(name, dim, params).bits, params.per_channel, params.outliers_per_row)),
      p_(std::move(params)),
      idx_bytes_(dim <= 256 ? 1 : 2) {
  for (size_t i = 0; i + 1 < p_.centroids.size(); ++i)
    mid_.push_back(0.5f * (p_.centroids[i] + p_.centroids[i + 1]));
}

// The centroid nearest to u: the number of midpoints below u (a tie goes to the lower one).
uint16_t KvQuantCodec::nearest(float u) const {
  return uint16_t(std::lower_bound(mid_.begin(), mid_.end(), u) - mid_.begin());
}

void kvquant_normalize_row(const KvQuantParams& p, int64_t C, const float* x, float* u,
                           int32_t* outliers, float* o_out, float* s_out) {
  const int64_t k = p.outliers_per_row;
  // How far out each value lies; NaN counts as farthest (keeps the sort's order strict).
  std::vector<float> dev(static_cast<size_t>(C));
  double mean = 0;
  if (!p.per_channel) {
    for (int64_t c = 0; c < C; ++c) mean += x[c];
    mean /= double(C);
  }
  for (int64_t c = 0; c < C; ++c) {
    const float d = p.per_channel ? std::fabs((x[c] - p.offset[size_t(c)]) / p.scale[size_t(c)])
                                  : float(std::fabs(double(x[c]) - mean));
    dev[size_t(c)] = std::isnan(d) ? INFINITY : d;
  }
  std::vector<int32_t> order(static_cast<size_t>(C));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return dev[size_t(a)] > dev[size_t(b)] || (dev[size_t(a)] == dev[size_t(b)] && a < b);
  });
  std::sort(order.begin(), order.begin() + k);
  std::vector<uint8_t> is_out(size_t(C), 0);
  for (int64_t i = 0; i < k; ++i) {
    outliers[i] = order[size_t(i)];
    is_out[size_t(order[size_t(i)])] = 1;
  }
  float o = 0, s = 1;
  if (!p.per_channel) {
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t c = 0; c < C; ++c)
      if (!is_out[size_t(c)]) { mn = std::min(mn, x[c]); mx = std::max(mx, x[c]); }
    o = half(0.5f * (mx + mn));
    s = half(0.5f * (mx - mn));
  }
  for (int64_t c = 0; c < C; ++c) {
    u[c] = is_out[size_t(c)] ? 0.0f
           : p.per_channel   ? (x[c] - p.offset[size_t(c)]) / p.scale[size_t(c)]
           : s > 0           ? (x[c] - o) / s
                             : 0.0f;
  }
  *o_out = o;
  *s_out = s;
}

void KvQuantCodec::encode_row(const float* x, uint8_t* out) const {
  const int64_t C = dim(), k = p_.outliers_per_row;
  std::vector<float> u(static_cast<size_t>(C));
  std::vector<int32_t> outl(static_cast<size_t>(k));
  float o, s;
  kvquant_normalize_row(p_, C, x, u.data(), outl.data(), &o, &s);
  uint8_t* p = out;
  if (!p_.per_channel) {
    put16(p, fp32_to_fp16(o));
    put16(p + 2, fp32_to_fp16(s));
    p += 4;
  }
  std::vector<uint16_t> codes(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) codes[size_t(c)] = nearest(u[size_t(c)]);
  for (int64_t i = 0; i < k; ++i) {
    const int32_t c = outl[size_t(i)];
    codes[size_t(c)] = 0;
    if (idx_bytes_ == 1) *p = uint8_t(c); else put16(p, uint16_t(c));
    put16(p + idx_bytes_, fp32_to_fp16(x[c]));
    p += idx_bytes_ + 2;
  }
  pack_bits(codes.data(), C, p_.bits, p);
}

void KvQuantCodec::decode_row(const uint8_t* in, float* x) const {
  const int64_t C = dim(), k = p_.outliers_per_row;
  float o = 0, s = 1;
  const uint8_t* p = in;
  if (!p_.per_channel) {
    o = fp16_to_fp32(get16(p));
    s = fp16_to_fp32(get16(p + 2));
    p += 4;
  }
  const uint8_t* sparse = p;
  p += k * (idx_bytes_ + 2);
  std::vector<uint16_t> codes(static_cast<size_t>(C));
  unpack_bits(p, C, p_.bits, codes.data());
  for (int64_t c = 0; c < C; ++c) {
    const float u = p_.centroids[codes[size_t(c)]];
    x[c] = p_.per_channel ? u * p_.scale[size_t(c)] + p_.offset[size_t(c)] : u * s + o;
  }
  for (int64_t i = 0; i < k; ++i, sparse += idx_bytes_ + 2) {
    const int64_t c = idx_bytes_ == 1 ? sparse[0] : get16(sparse);
    if (c < C) x[c] = fp16_to_fp32(get16(sparse + idx_bytes_));
  }
}

void KvQuantCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  for (int64_t r = 0; r < rows; ++r) encode_row(x + r * dim(), out + r * block_bytes());
}

void KvQuantCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  for (int64_t r = 0; r < rows; ++r) decode_row(in + r * block_bytes(), x + r * dim());
}

}  // namespace aquakv
