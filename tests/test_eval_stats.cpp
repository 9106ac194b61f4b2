// Tests of eval/stats.h against closed-form math and float64 two-pass references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "aquakv/eval/stats.h"

namespace aquakv::eval {
namespace {

std::vector<float> logits_of(const std::vector<double>& p, float shift) {
  std::vector<float> l(p.size());
  for (size_t i = 0; i < p.size(); ++i) l[i] = float(std::log(p[i])) + shift;
  return l;
}

std::vector<double> random_dist(std::mt19937_64& rng, size_t n, double sharpness) {
  std::normal_distribution<double> g(0, sharpness);
  std::vector<double> p(n);
  double s = 0;
  for (auto& x : p) s += (x = std::exp(g(rng)));
  for (auto& x : p) x /= s;
  return p;
}

// KL from probabilities directly, in double: the reference the logits path must match.
double kl_ref(const std::vector<double>& p, const std::vector<double>& q) {
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}

TEST(EvalStats, UniformLogitsGivePplEqualToVocabSize) {
  const int64_t V = 49152;
  std::vector<float> l(V, 3.25f);
  NllStats s;
  for (int64_t t = 0; t < 100; ++t) s.add(token_nll(l.data(), V, (t * 7919) % V));
  EXPECT_NEAR(s.ppl(), double(V), 1e-9 * V);
  EXPECT_NEAR(s.mean(), std::log(double(V)), 1e-12);
  EXPECT_NEAR(s.ppl_stderr(), 0.0, 1e-9);
  EXPECT_NEAR(entropy(l.data(), V), std::log(double(V)), 1e-10);
}

TEST(EvalStats, NllAndEntropyOfKnownDistribution) {
  const std::vector<double> p{0.5, 0.25, 0.125, 0.125};
  const auto l = logits_of(p, -7.5f);  // softmax is shift invariant
  EXPECT_NEAR(token_nll(l.data(), 4, 0), std::log(2.0), 1e-6);
  EXPECT_NEAR(token_nll(l.data(), 4, 3), std::log(8.0), 1e-6);
  EXPECT_NEAR(entropy(l.data(), 4), 1.75 * std::log(2.0), 1e-6);  // 1.75 bits
  EXPECT_EQ(argmax(l.data(), 4), 0);
  // Large logits must not overflow (max shift).
  std::vector<float> big{1000.f, 1000.f};
  EXPECT_NEAR(token_nll(big.data(), 2, 1), std::log(2.0), 1e-12);
}

TEST(EvalStats, KlClosedFormUniformVersusBoostedToken) {
  // P uniform on V; Q: token 0's logit raised by d. Z = e^d + V - 1,
  // KL(P||Q) = -log V + log Z - d / V.
  for (int64_t V : {2, 10, 49152}) {
    for (double d : {0.0, 0.5, 3.0, -2.0}) {
      std::vector<float> base(V, 0.f), test(V, 0.f);
      test[0] = float(d);
      const double Z = std::exp(d) + double(V - 1);
      const double want = -std::log(double(V)) + std::log(Z) - d / double(V);
      EXPECT_NEAR(kl_divergence_full(base.data(), test.data(), V), want, 1e-9 + 1e-6 * want)
          << V << " " << d;
    }
  }
}

TEST(EvalStats, KlBernoulliClosedFormAndSelfIsZero) {
  for (double a : {0.1, 0.5, 0.9}) {
    for (double b : {0.2, 0.5, 0.99}) {
      const auto lp = logits_of({a, 1 - a}, 2.f), lq = logits_of({b, 1 - b}, -1.f);
      const double want = a * std::log(a / b) + (1 - a) * std::log((1 - a) / (1 - b));
      EXPECT_NEAR(kl_divergence_full(lp.data(), lq.data(), 2), want, 1e-6);
    }
  }
  std::mt19937_64 rng(1);
  const auto p = random_dist(rng, 1000, 2.0);
  const auto l = logits_of(p, 0.f);
  EXPECT_EQ(kl_divergence_full(l.data(), l.data(), 1000), 0.0);
}

TEST(EvalStats, CompactRowWithoutTruncationMatchesFullKl) {
  std::mt19937_64 rng(2);
  const size_t V = 3000;
  const auto p = random_dist(rng, V, 2.5), q = random_dist(rng, V, 2.5);
  const auto lp = logits_of(p, 1.f), lq = logits_of(q, 0.f);
  const CompactRow row = compact_row(lp.data(), V, 17, int(V), 0.0);
  ASSERT_EQ(row.top.size(), V);
  EXPECT_NEAR(row.base_nll, -std::log(p[17]), 1e-5);
  EXPECT_LT(row.p_rest, 1e-12);
  for (size_t i = 1; i < row.top.size(); ++i) ASSERT_GE(row.top[i - 1].second, row.top[i].second);
  EXPECT_NEAR(kl_divergence_compact(row, lq.data(), V), kl_ref(p, q), 1e-5);
}

TEST(EvalStats, CompactKlIsTheChainRuleLowerBound) {
  // KL(P||Q) = KL_S + p_rest * KL(P_tail || Q_tail): check the gap exactly.
  std::mt19937_64 rng(3);
  const size_t V = 2000;
  const auto p = random_dist(rng, V, 1.5), q = random_dist(rng, V, 1.5);
  const auto lp = logits_of(p, 0.f), lq = logits_of(q, 0.f);
  for (int k : {1, 10, 200}) {
    const CompactRow row = compact_row(lp.data(), V, 0, k, 0.0);
    ASSERT_EQ(row.top.size(), size_t(k));
    std::vector<char> in_s(V, 0);
    double kept = 0;
    for (auto& [id, l] : row.top) in_s[id] = 1, kept += p[id];
    EXPECT_NEAR(row.p_rest, 1 - kept, 1e-6);
    double pr = 0, qr = 0;
    for (size_t v = 0; v < V; ++v) if (!in_s[v]) pr += p[v], qr += q[v];
    double tail_kl = 0;
    for (size_t v = 0; v < V; ++v)
      if (!in_s[v]) tail_kl += (p[v] / pr) * std::log((p[v] / pr) / (q[v] / qr));
    const double ks = kl_divergence_compact(row, lq.data(), V);
    EXPECT_LE(ks, kl_ref(p, q) + 1e-6);
    EXPECT_NEAR(kl_ref(p, q) - ks, pr * tail_kl, 1e-5) << k;
  }
}

TEST(EvalStats, CompactRowStopsAtMassEpsilon) {
  // Geometric p_i ~ 2^-i: keeping n tokens leaves mass ~2^-n.
  std::vector<double> p(64);
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += (p[i] = std::ldexp(1.0, -int(i) - 1));
  for (auto& x : p) x /= s;
  const auto l = logits_of(p, 0.f);
  const CompactRow row = compact_row(l.data(), 64, 5, 64, 1e-3);
  EXPECT_EQ(row.top.size(), 10u);  // 2^-10 < 1e-3 < 2^-9
  EXPECT_LE(row.p_rest, 1e-3);
  EXPECT_GT(row.p_rest, 5e-4);
  const CompactRow capped = compact_row(l.data(), 64, 5, 4, 1e-3);
  EXPECT_EQ(capped.top.size(), 4u);
  EXPECT_NEAR(capped.p_rest, 1.0 / 16, 1e-6);
}

TEST(EvalStats, PercentilesOfKnownSets) {
  std::vector<double> x;
  for (int i = 1; i <= 100; ++i) x.push_back(i);
  std::shuffle(x.begin(), x.end(), std::mt19937_64(4));
  EXPECT_NEAR(percentile(x, 99), 99.01, 1e-12);
  EXPECT_NEAR(percentile(x, 99.9), 99.901, 1e-12);
  EXPECT_NEAR(percentile(x, 50), 50.5, 1e-12);
  EXPECT_EQ(percentile(x, 0), 1.0);
  EXPECT_EQ(percentile(x, 100), 100.0);
  EXPECT_NEAR(percentile({1, 2, 3, 4}, 25), 1.75, 1e-12);
  EXPECT_EQ(percentile({7.5}, 99.9), 7.5);
}

TEST(EvalStats, StandardErrorMatchesTwoPassFloat64) {
  std::mt19937_64 rng(5);
  std::gamma_distribution<double> g(2.0, 1.5);
  NllStats s;
  std::vector<double> x(12345);
  for (auto& v : x) s.add(v = g(rng));
  double mean = 0;
  for (double v : x) mean += v;
  mean /= double(x.size());
  double ss = 0, sq = 0;
  for (double v : x) ss += (v - mean) * (v - mean), sq += v * v;
  const double n = double(x.size());
  const double se = std::sqrt(ss / (n - 1) / n);
  EXPECT_NEAR(s.mean(), mean, 1e-12 * mean);
  EXPECT_NEAR(s.mean_stderr(), se, 1e-10 * se);
  EXPECT_NEAR(s.ppl(), std::exp(mean), 1e-11 * std::exp(mean));
  EXPECT_NEAR(s.ppl_stderr(), std::exp(mean) * se, 1e-9 * std::exp(mean) * se);
  // llama.cpp's spelling of the same number: sqrt((E[x^2] - E[x]^2) / (N - 1)).
  const double llama_se = std::sqrt((sq / n - mean * mean) / (n - 1));
  EXPECT_NEAR(s.mean_stderr(), llama_se, 1e-8 * se);
}

TEST(EvalStats, WelfordStaysAccurateWithLargeOffset) {
  NllStats s;
  for (int i = 0; i < 1000; ++i) s.add(1e8 + (i % 2 ? 1.0 : -1.0));
  EXPECT_NEAR(s.sample_variance(), 1000.0 / 999.0, 1e-6);
}

TEST(EvalStats, KlSummary) {
  KlAccumulator acc;
  for (int i = 1; i <= 1000; ++i) acc.add(i * 1e-3, i % 4 != 0, 0.01);
  const KlSummary s = acc.summary();
  EXPECT_EQ(s.n, 1000);
  EXPECT_NEAR(s.mean, 0.5005, 1e-12);
  EXPECT_NEAR(s.p99, 0.99001, 1e-12);
  EXPECT_NEAR(s.p999, 0.999001, 1e-12);
  EXPECT_EQ(s.max, 1.0);
  EXPECT_NEAR(s.same_top_rate, 0.75, 1e-12);
  EXPECT_NEAR(s.mean_p_rest, 0.01, 1e-12);
}

}  // namespace
}  // namespace aquakv::eval
