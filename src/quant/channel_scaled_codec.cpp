#include "aquakv/quant/channel_scaled_codec.h"

#include <cmath>

#include "aquakv/util/error.h"

namespace aquakv {

namespace {
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
  const int64_t C = dim();
  inner_->decode(in, rows, x);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) x[r * C + c] *= inv_[size_t(c)];
}

}  // namespace aquakv
