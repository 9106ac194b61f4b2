// Evaluation statistics (see include/aquakv/eval/stats.h for the math).
#include "aquakv/eval/stats.h"
#include "aquakv/util/check.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>

namespace aquakv::eval {

double log_sum_exp(const float* logits, int64_t n_vocab) {
  AQUAKV_CHECK(n_vocab > 0);
  float mx = logits[0];
  for (int64_t v = 1; v < n_vocab; ++v) mx = std::max(mx, logits[v]);
  double s = 0;
  for (int64_t v = 0; v < n_vocab; ++v) s += std::exp(double(logits[v]) - double(mx));
  return double(mx) + std::log(s);
}

double token_nll(const float* logits, int64_t n_vocab, int64_t target) {
  AQUAKV_CHECK(target >= 0 && target < n_vocab);
  return log_sum_exp(logits, n_vocab) - double(logits[target]);
}

int64_t argmax(const float* logits, int64_t n_vocab) {
  return std::max_element(logits, logits + n_vocab) - logits;
}

double kl_divergence_full(const float* base, const float* test, int64_t n_vocab) {
  const double lse_p = log_sum_exp(base, n_vocab), lse_q = log_sum_exp(test, n_vocab);
  double kl = 0;
  for (int64_t v = 0; v < n_vocab; ++v) {
    const double lp = double(base[v]) - lse_p, lq = double(test[v]) - lse_q;
    kl += std::exp(lp) * (lp - lq);
  }
  return std::max(kl, 0.0);  // rounding can make an exact 0 come out as -1e-17
}

double entropy(const float* logits, int64_t n_vocab) {
  const double lse = log_sum_exp(logits, n_vocab);
  double h = 0;
  for (int64_t v = 0; v < n_vocab; ++v) {
    const double lp = double(logits[v]) - lse;
    h -= std::exp(lp) * lp;
  }
  return h;
}

CompactRow compact_row(const float* logits, int64_t n_vocab, int64_t target, int k_max,
                       double mass_eps) {
  AQUAKV_CHECK(n_vocab > 0 && k_max >= 1 && target >= 0 && target < n_vocab);
  const double lse = log_sum_exp(logits, n_vocab);
  const int64_t k = std::min<int64_t>(k_max, n_vocab);
  std::vector<uint32_t> idx(static_cast<size_t>(n_vocab));
  std::iota(idx.begin(), idx.end(), 0u);
  const auto before = [&](uint32_t a, uint32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  // O(V + k log k): select the k largest, then order them.
  if (k < n_vocab) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), before);
  std::sort(idx.begin(), idx.begin() + k, before);
  CompactRow row;
  row.base_nll = float(lse - double(logits[target]));
  double kept = 0;
  int64_t n = 0;
  while (n < k) {
    const double lp = double(logits[idx[size_t(n)]]) - lse;
    row.top.emplace_back(idx[size_t(n)], float(lp));
    kept += std::exp(lp);
    ++n;
    if (1.0 - kept <= mass_eps) break;
  }
  // The tail mass summed directly (not as 1 - kept) so that a tiny tail keeps its precision.
  double rest = 0;
  for (int64_t j = n; j < n_vocab; ++j) rest += std::exp(double(logits[idx[size_t(j)]]) - lse);
  row.p_rest = float(rest);
  return row;
}

double kl_divergence_compact(const CompactRow& base, const float* test, int64_t n_vocab) {
  const double lse_q = log_sum_exp(test, n_vocab);
  std::vector<uint32_t> ids;
  ids.reserve(base.top.size());
  double kl = 0;
  for (const auto& [id, lp] : base.top) {
    AQUAKV_CHECK(int64_t(id) < n_vocab);
    const double lq = double(test[id]) - lse_q;
    kl += std::exp(double(lp)) * (double(lp) - lq);
    ids.push_back(id);
  }
  if (base.p_rest > 0) {
    std::sort(ids.begin(), ids.end());
    double q_rest = 0;
    size_t s = 0;
    for (int64_t v = 0; v < n_vocab; ++v) {
      if (s < ids.size() && ids[s] == uint32_t(v)) {
        ++s;
        continue;
      }
      q_rest += std::exp(double(test[v]) - lse_q);
    }
    q_rest = std::max(q_rest, DBL_MIN);
    const double pr = double(base.p_rest);
    kl += pr * (std::log(pr) - std::log(q_rest));
  }
  return std::max(kl, 0.0);
}

void NllStats::add(double x) {
  ++n_;
  const double d = x - mean_;
  mean_ += d / double(n_);
  m2_ += d * (x - mean_);
}

double NllStats::sample_variance() const { return n_ < 2 ? 0.0 : m2_ / double(n_ - 1); }
double NllStats::mean_stderr() const {
  return n_ < 2 ? 0.0 : std::sqrt(sample_variance() / double(n_));
}
double NllStats::ppl() const { return std::exp(mean_); }
double NllStats::ppl_stderr() const { return ppl() * mean_stderr(); }

double percentile(std::vector<double> values, double q) {
  AQUAKV_CHECK(!values.empty() && q >= 0 && q <= 100);
  std::sort(values.begin(), values.end());
  const double h = double(values.size() - 1) * q / 100.0;
  const size_t lo = size_t(std::floor(h));
  if (lo + 1 >= values.size()) return values.back();
  return values[lo] + (h - double(lo)) * (values[lo + 1] - values[lo]);
}

void KlAccumulator::add(double kl, bool same_top, double p_rest) {
  kl_.push_back(kl);
  same_top_ += same_top ? 1 : 0;
  p_rest_sum_ += p_rest;
}

KlSummary KlAccumulator::summary() const {
  KlSummary s;
  s.n = int64_t(kl_.size());
  if (s.n == 0) return s;
  NllStats m;  // same running mean / standard error math
  for (double x : kl_) m.add(x);
  s.mean = m.mean();
  s.mean_stderr = m.mean_stderr();
  s.median = percentile(kl_, 50);
  s.p99 = percentile(kl_, 99);
  s.p999 = percentile(kl_, 99.9);
  s.max = *std::max_element(kl_.begin(), kl_.end());
  s.same_top_rate = double(same_top_) / double(s.n);
  s.mean_p_rest = p_rest_sum_ / double(s.n);
  return s;
}

}  // namespace aquakv::eval
