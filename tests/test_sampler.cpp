// Sampler on known distributions: greedy, top-k/top-p/min-p cut sets, temperature, frequencies
// of draws within 5 standard deviations, and seed determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "aquakv/engine/sampler.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// Logits whose softmax is exactly `p` (up to a constant).
std::vector<float> logits_of(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(float(std::log(x)));
  return l;
}

SamplerParams plain(float temp) {
  SamplerParams s;
  s.temperature = temp;
  s.top_k = 0;
  s.top_p = 1.0f;
  s.min_p = 0.0f;
  s.seed = 42;
  return s;
}

TEST(Sampler, GreedyTakesArgmaxLowestIdOnTies) {
  Sampler s(plain(0.0f));
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 2.9f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{5.0f, 1.0f, 5.0f}), 0);
}

TEST(Sampler, DrawFrequenciesMatchTheDistribution) {
  const std::vector<double> p = {0.5, 0.25, 0.125, 0.0625, 0.0625};
  Sampler s(plain(1.0f));
  const auto l = logits_of(p);
  const int N = 40000;
  std::vector<int> count(p.size());
  for (int i = 0; i < N; ++i) count[size_t(s.sample(l))]++;
  for (size_t i = 0; i < p.size(); ++i) {
    const double sd = std::sqrt(N * p[i] * (1 - p[i]));
    EXPECT_NEAR(count[i], N * p[i], 5 * sd) << i;
  }
}

TEST(Sampler, TemperatureSharpens) {
  const std::vector<double> p = {0.6, 0.3, 0.1};
  const Sampler s(plain(0.5f));
  const auto d = s.distribution(logits_of(p));
  // softmax(log p / T) = p^(1/T) / sum p^(1/T).
  double z = 0;
  for (double x : p) z += x * x;
  ASSERT_EQ(d.size(), 3u);
  for (const auto& [id, q] : d) EXPECT_NEAR(q, p[size_t(id)] * p[size_t(id)] / z, 1e-6);
}

TEST(Sampler, TopKTopPMinPCutSets) {
  const std::vector<double> p = {0.05, 0.4, 0.3, 0.15, 0.1};  // sorted: 1, 2, 3, 4, 0
  const auto l = logits_of(p);
  SamplerParams k = plain(1.0f);
  k.top_k = 2;
  auto d = Sampler(k).distribution(l);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].first, 1);
  EXPECT_EQ(d[1].first, 2);
  EXPECT_NEAR(d[0].second, 0.4 / 0.7, 1e-6);
  SamplerParams tp = plain(1.0f);
  tp.top_p = 0.8f;  // 0.4 + 0.3 = 0.7 < 0.8 <= 0.85: keeps three
  d = Sampler(tp).distribution(l);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[2].first, 3);
  SamplerParams mp = plain(1.0f);
  mp.min_p = 0.3f;  // keeps p >= 0.12: ids 1, 2, 3
  d = Sampler(mp).distribution(l);
  ASSERT_EQ(d.size(), 3u);
  // Drawing never leaves the cut set.
  Sampler s(tp);
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.sample(l);
    EXPECT_TRUE(t == 1 || t == 2 || t == 3) << t;
  }
}

TEST(Sampler, SeedIsDeterministic) {
  const auto l = logits_of({0.2, 0.2, 0.2, 0.2, 0.2});
  SamplerParams a = plain(1.0f);
  Sampler s1(a), s2(a);
  a.seed = 43;
  Sampler s3(a);
  std::vector<int32_t> r1, r2, r3;
  for (int i = 0; i < 64; ++i) {
    r1.push_back(s1.sample(l));
    r2.push_back(s2.sample(l));
    r3.push_back(s3.sample(l));
  }
  EXPECT_EQ(r1, r2);
  EXPECT_NE(r1, r3);
}

TEST(Sampler, RefusesBadParameters) {
  SamplerParams b = plain(-1.0f);
  EXPECT_THROW(Sampler{b}, Error);
  b = plain(1.0f);
  b.top_p = 1.5f;
  EXPECT_THROW(Sampler{b}, Error);
  b = plain(1.0f);
  b.min_p = -0.1f;
  EXPECT_THROW(Sampler{b}, Error);
}

}  // namespace
}  // namespace aquakv
