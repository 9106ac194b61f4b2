#include "aquakv/calib/bit_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "aquakv/quant/channel_scaled_codec.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {

std::vector<int> allocate_min_cost(const std::vector<std::vector<double>>& cost,
                                   const std::vector<std::vector<int64_t>>& bytes, int64_t budget) {
  const size_t n = cost.size();
  if (bytes.size() != n) fail("bit plan: {} cost rows, {} byte rows", n, bytes.size());
  // Shift every item by its cheapest option so the table only spans the discretionary bytes.
  int64_t base = 0;
  std::vector<int64_t> lo(n);
  for (size_t i = 0; i < n; ++i) {
    if (cost[i].empty() || cost[i].size() != bytes[i].size()) fail("bit plan: item {} has no options", i);
    lo[i] = *std::min_element(bytes[i].begin(), bytes[i].end());
    if (lo[i] < 0) fail("bit plan: item {} has negative bytes", i);
    base += lo[i];
  }
  if (base > budget) fail("bit plan: the cheapest plan takes {} bytes per token, the budget is {}", base, budget);
  const int64_t B = budget - base;
  const double inf = std::numeric_limits<double>::infinity();
  // dp[b]: least cost of the items so far with exactly b discretionary bytes.
  std::vector<double> dp(size_t(B + 1), inf), next(size_t(B + 1));
  dp[0] = 0;
  std::vector<std::vector<int>> arg(n, std::vector<int>(size_t(B + 1), -1));
  for (size_t i = 0; i < n; ++i) {
    std::fill(next.begin(), next.end(), inf);
    for (int64_t b = 0; b <= B; ++b) {
      for (size_t j = 0; j < cost[i].size(); ++j) {
        const int64_t x = bytes[i][j] - lo[i];
        if (x > b || dp[size_t(b - x)] == inf) continue;
        const double c = dp[size_t(b - x)] + cost[i][j];
        if (c < next[size_t(b)]) {
          next[size_t(b)] = c;
          arg[i][size_t(b)] = int(j);
        }
      }
    }
    std::swap(dp, next);
  }
  int64_t best = 0;
  for (int64_t b = 1; b <= B; ++b)
    if (dp[size_t(b)] < dp[size_t(best)]) best = b;
  std::vector<int> choice(n);
  for (size_t i = n; i-- > 0;) {
    const int j = arg[i][size_t(best)];
    choice[i] = j;
    best -= bytes[i][size_t(j)] - lo[i];
  }
  return choice;
}

BitPlanner::BitPlanner(const KvSamples& d, std::vector<std::shared_ptr<const Codec>> candidates,
                       bool weighted_opt, double key_weight, int64_t max_rows)
    : L_(d.n_layers), C_(d.width), hkv_(d.n_kv_heads > 0 ? d.n_kv_heads : 1),
      group_(d.q_group > 0 ? d.q_group : 1), max_rows_(max_rows), n_train_(d.n_train),
      key_weight_(key_weight), cand_(std::move(candidates)) {
  if (cand_.empty()) fail("bit plan: no candidate codecs");
  if (C_ % hkv_ != 0) fail("bit plan: width {} is not a multiple of {} KV heads", C_, hkv_);
  hd_ = C_ / hkv_;
  for (const auto& c : cand_) {
    if (!c || c->dim() != C_ || c->block_rows() != 1)
      fail("bit plan: candidate {} is not a per-token codec of width {}", c ? c->spec() : "(null)", C_);
  }
  cost_.resize(size_t(L_));
  // Query weights and value spreads; without query statistics keys and values weigh alike.
  if (!d.q2.empty() && d.q_rows > 0) {
    q_.assign(size_t(L_), std::vector<double>(size_t(C_)));
    for (int64_t l = 0; l < L_; ++l)
      for (int64_t c = 0; c < C_; ++c) q_[size_t(l)][size_t(c)] = d.q2[size_t(l)][size_t(c)] / double(d.q_rows);
  }
  const bool weighted = weighted_opt && !d.q2.empty() && d.q_rows > 0;
  tv_.assign(size_t(L_), std::vector<double>(size_t(hkv_), 1.0));
  out_energy_.assign(size_t(L_), 0.0);
  for (int64_t l = 0; l < L_; ++l) {
    double e = 0;
    for (int64_t r = 0; r < d.n_train; ++r)
      for (int64_t c = 0; c < C_; ++c) {
        const double x = fp16_to_fp32(d.v[size_t(l)][size_t(r * C_ + c)]);
        const double u = weighted_opt && !d.wo2.empty() ? d.wo2[size_t(l)][size_t(c)] : 1.0;
        e += u * x * x;
      }
    out_energy_[size_t(l)] = e / double(std::max<int64_t>(1, d.n_train));
  }
  if (!weighted) return;
  w_.assign(size_t(L_), std::vector<double>(size_t(C_)));
  for (int64_t l = 0; l < L_; ++l)
    for (int64_t c = 0; c < C_; ++c) w_[size_t(l)][size_t(c)] = d.q2[size_t(l)][size_t(c)] / double(d.q_rows);
  if (!d.wo2.empty()) wo_ = d.wo2;
  const int64_t n = d.n_train;
  for (int64_t l = 0; l < L_; ++l) {
    const auto& v = d.v[size_t(l)];
    std::vector<double> s1(size_t(C_), 0.0), s2(size_t(C_), 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < C_; ++c) {
        const double x = fp16_to_fp32(v[size_t(r * C_ + c)]);
        s1[size_t(c)] += x;
        s2[size_t(c)] += x * x;
      }
    for (int64_t h = 0; h < hkv_; ++h) {
      double t = 0;
      for (int64_t c = h * hd_; c < (h + 1) * hd_; ++c) {
        const double m = s1[size_t(c)] / double(n);
        // With output weights the spread is measured where it lands: through W_o, per query head.
        const double o = wo_.empty() ? 1.0 : wo_[size_t(l)][size_t(c)] / double(group_);
        t += o * std::max(s2[size_t(c)] / double(n) - m * m, 0.0);
      }
      tv_[size_t(l)][size_t(h)] = t;
    }
  }
}

void BitPlanner::measure(int layer, bool key, const std::vector<float>& target, const std::vector<float>& pred) {
  if (layer < 1 || layer >= L_) fail("bit plan: layer {} out of range", layer);
  // Evenly strided training rows.
  const int64_t stride = std::max<int64_t>(1, n_train_ / std::max<int64_t>(1, max_rows_));
  const int64_t m = (n_train_ + stride - 1) / stride;
  std::vector<float> x(size_t(m * C_));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < C_; ++c) {
      const size_t at = size_t(i * stride * C_ + c);
      x[size_t(i * C_ + c)] = target[at] - pred[at];
    }
  auto& out = cost_[size_t(layer)][key ? 0 : 1];
  out.assign(cand_.size(), 0.0);
  std::vector<float> scales;
  if (key ? scale_keys_ : scale_values_)
    scales = channel_scales(target, pred, n_train_, C_,
                            key ? (q_.empty() ? nullptr : &q_[size_t(layer)]) : (wo_.empty() ? nullptr : &wo_[size_t(layer)]));
  for (size_t j = 0; j < cand_.size(); ++j) {
    const std::shared_ptr<const Codec> wrapped =
        scales.empty() ? cand_[j] : std::make_shared<ChannelScaledCodec>(cand_[j], scales);
    const Codec& codec = *wrapped;
    // Per-channel squared error of the round trip: fixed blocks of rows summed in block order,
    // so the plan does not depend on the thread count.
    constexpr int64_t kBlock = 256;
    const int64_t nb = (m + kBlock - 1) / kBlock;
    std::vector<double> parts(size_t(nb * C_), 0.0);
    parallel_for(nb, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * kBlock, k = std::min(kBlock, m - r0);
        std::vector<uint8_t> codes(size_t(codec.encoded_bytes(k)));
        std::vector<float> dec(size_t(k * C_));
        codec.encode(x.data() + r0 * C_, k, codes.data());
        codec.decode(codes.data(), k, dec.data());
        double* part = parts.data() + b * C_;
        for (int64_t i = 0; i < k * C_; ++i) {
          const double e = double(dec[size_t(i)]) - double(x[size_t(r0 * C_ + i)]);
          part[i % C_] += e * e;
        }
      }
    }, 1);
    std::vector<double> e2(size_t(C_), 0.0);
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t c = 0; c < C_; ++c) e2[size_t(c)] += parts[size_t(b * C_ + c)];
    double total = 0;
    for (int64_t h = 0; h < hkv_; ++h) {
      double s = 0;
      for (int64_t c = h * hd_; c < (h + 1) * hd_; ++c) {
        const double wc = key ? (w_.empty() ? 1.0 : w_[size_t(layer)][size_t(c)])
                              : (wo_.empty() ? (w_.empty() ? 1.0 : double(group_)) : wo_[size_t(layer)][size_t(c)]);
        s += wc * e2[size_t(c)] / double(m);
      }
      // Keys: logit error (already summed over the query heads) times the value spread;
      // values: every query head reading this KV head sees the error.
      total += key ? s * tv_[size_t(layer)][size_t(h)] * (w_.empty() ? 1.0 : key_weight_) : s;
    }
    if (layer_norm_ && out_energy_[size_t(layer)] > 0) total /= out_energy_[size_t(layer)];
    out[j] = total;
  }
}

std::vector<std::array<int, 2>> BitPlanner::plan(double bits, int64_t layer0_bytes_per_row) const {
  std::vector<std::vector<double>> cost;
  std::vector<std::vector<int64_t>> bytes;
  std::vector<int64_t> cb;
  for (const auto& c : cand_) cb.push_back(c->encoded_bytes(1));
  for (int64_t l = 1; l < L_; ++l)
    for (int s = 0; s < 2; ++s) {
      if (cost_[size_t(l)][size_t(s)].size() != cand_.size()) fail("bit plan: layer {} was not measured", l);
      cost.push_back(cost_[size_t(l)][size_t(s)]);
      bytes.push_back(cb);
    }
  // bits per value = 8 * bytes per token / (L * 2C): the budget in bytes per token, layer 0 off.
  const double total = std::floor(bits * double(L_ * 2 * C_) / 8.0 + 1e-9);
  const int64_t budget = int64_t(total) - 2 * layer0_bytes_per_row;
  std::vector<int> choice;
  try {
    choice = allocate_min_cost(cost, bytes, budget);
  } catch (const Error&) {
    int64_t least = 2 * layer0_bytes_per_row;
    for (size_t i = 0; i < bytes.size(); ++i) least += *std::min_element(bytes[i].begin(), bytes[i].end());
    fail("calibrate --bits {}: below the cheapest plan of these candidates ({:.3f} bits per value)", bits,
         8.0 * double(least) / double(L_ * 2 * C_));
  }
  std::vector<std::array<int, 2>> out(size_t(L_), {0, 0});
  for (int64_t l = 1; l < L_; ++l) out[size_t(l)] = {choice[size_t(2 * (l - 1))], choice[size_t(2 * (l - 1) + 1)]};
  return out;
}

double BitPlanner::bits_per_value(const std::vector<std::array<int, 2>>& p, int64_t layer0_bytes_per_row) const {
  int64_t b = 2 * layer0_bytes_per_row;
  for (int64_t l = 1; l < L_; ++l)
    for (int s = 0; s < 2; ++s) b += cand_[size_t(p[size_t(l)][size_t(s)])]->encoded_bytes(1);
  return 8.0 * double(b) / double(L_ * 2 * C_);
}

}  // namespace aquakv
