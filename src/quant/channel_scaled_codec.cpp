// The channel-scaled codec (quant/channel_scaled_codec.h).
#include "aquakv/quant/channel_scaled_codec.h"

#include <algorithm>
#include <cmath>

#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"
#include "channel_scaled_kernels.h"

// decode_add's x * inv and + y must stay two roundings, as decode (a stored product) then an add:
// forbid contraction to FMA, whatever the target.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv {

namespace {

// x *= s per channel (rows of C): the scalar reference loop, or its AVX2 / AVX-512 version.
void scale_channels(float* x, const float* s, int64_t rows, int64_t C) {
  if (simd_at_least(SimdLevel::kAvx512)) return detail::scale_channels_avx512(x, s, rows, C);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::scale_channels_avx2(x, s, rows, C);
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * C;
    for (int64_t c = 0; c < C; ++c) xr[c] *= s[c];
  }
}

// y = y + x * s per channel: the product rounded, then the sum.
void scale_add_channels(const float* x, const float* s, int64_t rows, int64_t C, float* y) {
  if (simd_at_least(SimdLevel::kAvx512)) return detail::scale_add_channels_avx512(x, s, rows, C, y);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::scale_add_channels_avx2(x, s, rows, C, y);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = yr[c] + xr[c] * s[c];
  }
}

const Codec& checked(const std::shared_ptr<const Codec>& c) {
  if (!c) fail("channel-scaled codec: no inner codec");
  return *c;
}
}  // namespace

ChannelScaledCodec::ChannelScaledCodec(std::shared_ptr<const Codec> inner, std::vector<float> scales)
    : Codec(checked(inner).spec() + "+chscale", inner->dim(), inner->block_rows(), inner->block_bytes()),
      inner_(std::move(inner)), s_(std::move(scales)) {
  if (int64_t(s_.size()) != dim()) fail("codec {}: {} channel scales for width {}", spec(), s_.size(), dim());
  inv_.resize(s_.size());
  for (size_t c = 0; c < s_.size(); ++c) {
    if (!(std::isfinite(s_[c]) && s_[c] > 0 && std::isfinite(1.0f / s_[c])))
      fail("codec {}: channel {} scale {} is not a finite positive number", spec(), c, s_[c]);
    inv_[c] = 1.0f / s_[c];
  }
}

void ChannelScaledCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  const int64_t C = dim();
  std::vector<float> y(size_t(rows * C));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) y[size_t(r * C + c)] = x[r * C + c] * s_[size_t(c)];
  inner_->encode(y.data(), rows, out);
}

void ChannelScaledCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  inner_->decode(in, rows, x);
  scale_channels(x, inv_.data(), rows, dim());
}

void ChannelScaledCodec::decode_add(const uint8_t* in, int64_t rows, float* y) const {
  // A few blocks at a time (~16 KB of floats, in cache between the two passes).
  const int64_t C = dim(), br = block_rows();
  const int64_t step = std::max<int64_t>(1, 4096 / (br * C)) * br;
  thread_local std::vector<float> buf;
  buf.resize(size_t(std::min(step, rows) * C));
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    const int64_t m = std::min(step, rows - r0);
    inner_->decode(in + encoded_bytes(r0), m, buf.data());
    scale_add_channels(buf.data(), inv_.data(), m, C, y + r0 * C);
  }
}

}  // namespace aquakv
