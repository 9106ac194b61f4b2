// The sampling chain of engine/sampler.h.
#include "aquakv/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "aquakv/util/error.h"

namespace aquakv {

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) fail("--temp: expected >= 0, got {}", p.temperature);
  if (!(p.top_p >= 0.0f && p.top_p <= 1.0f)) fail("--top-p: expected a value in [0, 1], got {}", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail("--min-p: expected a value in [0, 1], got {}", p.min_p);
  if (p.top_k < 0) fail("--top-k: expected >= 0 (0 = off), got {}", p.top_k);
}

std::vector<std::pair<int32_t, double>> Sampler::distribution(std::span<const float> logits) const {
  const int64_t n = int64_t(logits.size());
  if (n == 0) fail("sampler: empty logits");
  if (p_.temperature <= 0.0f) {
    const int64_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    return {{int32_t(best), 1.0}};
  }
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  int64_t keep = n;
  if (p_.top_k > 0 && p_.top_k < n) {
    keep = p_.top_k;
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  } else {
    std::sort(idx.begin(), idx.end(), by_logit);
  }
  idx.resize(size_t(keep));
  // Probabilities at temperature 1 for top-p and min-p.
  const double mx = logits[size_t(idx[0])];
  std::vector<double> p(idx.size());
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += (p[i] = std::exp(double(logits[size_t(idx[i])]) - mx));
  for (auto& x : p) x /= sum;
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < p.size()) {
      cum += p[k++];
      if (cum >= p_.top_p) break;
    }
    idx.resize(std::max<size_t>(k, 1));
  }
  if (p_.min_p > 0.0f) {
    size_t k = 1;
    while (k < idx.size() && p[k] >= p_.min_p * p[0]) ++k;
    idx.resize(k);
  }
  std::vector<std::pair<int32_t, double>> out(idx.size());
  double z = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    const double q = std::exp((double(logits[size_t(idx[i])]) - mx) / p_.temperature);
    out[i] = {idx[i], q};
    z += q;
  }
  for (auto& o : out) o.second /= z;
  return out;
}

int32_t Sampler::sample(std::span<const float> logits) {
  const auto dist = distribution(logits);
  if (dist.size() == 1) return dist[0].first;
  const double u = double(rng_() >> 11) * 0x1.0p-53;
  double cum = 0;
  for (const auto& [id, q] : dist) {
    cum += q;
    if (u < cum) return id;
  }
  return dist.back().first;  // u within rounding of 1
}

}  // namespace aquakv
