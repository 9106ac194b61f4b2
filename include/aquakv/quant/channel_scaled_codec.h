// A calibrated per-channel scale around another codec: encode(x) = inner.encode(x * s),
// decode(c) = inner.decode(c) / s (channel by channel). Owns: that wrapper. Not: how s is
// chosen (calib/fit_chain.cpp) or stored (kv/adapters.h).
//
// Why: HIGGS rotates a group by a Hadamard matrix and scales it by its norm, so its error is
// spread evenly over the scaled channels. Coding x * s instead of x puts error D / s_c^2 on
// channel c (D ~ the scaled signal's energy sum_c s_c^2 sigma_c^2). When channel c's error
// costs w_c (keys: the queries' mean square along c, which moves the softmax logits), the cost
// sum_c w_c D / s_c^2 is least for s_c^2 proportional to sqrt(w_c) / sigma_c (Cauchy-Schwarz):
// (sum_c sqrt(w_c) sigma_c)^2 instead of (sum_c w_c)(sum_c sigma_c^2) unscaled.
// The scales are per model (calibrated), so they cost no bits per token.
#pragma once

#include <memory>
#include <vector>

#include "aquakv/quant/codec.h"

namespace aquakv {

class ChannelScaledCodec final : public Codec {
 public:
  // scales: dim() finite values > 0 (checked).
  ChannelScaledCodec(std::shared_ptr<const Codec> inner, std::vector<float> scales);
  void encode(const float* x, int64_t rows, uint8_t* out) const override;
  void decode(const uint8_t* in, int64_t rows, float* x) const override;
  // y += decode(in): the inner codec decodes a few rows into a buffer, then y + x * (1 / s) per
  // element -- decode's rounded product, then the sum (the same bits as decode, then add).
  void decode_add(const uint8_t* in, int64_t rows, float* y) const override;
  const std::vector<float>& scales() const { return s_; }
  const Codec& inner() const { return *inner_; }

 private:
  std::shared_ptr<const Codec> inner_;
  std::vector<float> s_, inv_;
};

}  // namespace aquakv
