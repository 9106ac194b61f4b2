// Tests of eval/perplexity.h with a fake model whose logits are known in closed form.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "aquakv/eval/perplexity.h"
#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

// Logits of the token after `prev` at sequence position `pos`: A[prev][v] + 0.01 * pos * B[v].
// They depend on the position, so a missing reset (fresh cache) changes every number.
struct FakeModel : LogitsModel {
  int64_t V, max_tokens;
  std::vector<float> A, B;
  int64_t pos = 0;
  int resets = 0;
  std::vector<int64_t> calls;
  FakeModel(int64_t v, int64_t ctx, uint64_t seed) : V(v), max_tokens(ctx), A(size_t(v * v)), B(size_t(v)) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> g(0, 2);
    for (auto& x : A) x = g(rng);
    for (auto& x : B) x = g(rng);
  }
  float logit(int32_t prev, int64_t p, int64_t v) const {
    return A[size_t(prev * V + v)] + 0.01f * float(p) * B[size_t(v)];
  }
  int64_t n_vocab() const override { return V; }
  void reset() override { pos = 0, ++resets; }
  void forward(const int32_t* t, int64_t n, float* out) override {
    calls.push_back(n);
    if (pos + n > max_tokens) fail("fake model: context overflow");
    for (int64_t i = 0; i < n; ++i, ++pos)
      for (int64_t v = 0; v < V; ++v) out[i * V + v] = logit(t[i], pos, v);
  }
};

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(V));
  return t;
}

// Float64 reference of the mean NLL over the protocol's positions.
double reference_mean_nll(const FakeModel& m, const std::vector<int32_t>& toks, int64_t ctx,
                          int64_t n_windows) {
  double sum = 0;
  int64_t n = 0;
  for (int64_t w = 0; w < n_windows; ++w) {
    for (int64_t p = 0; p + 1 < ctx; ++p) {
      const int32_t prev = toks[size_t(w * ctx + p)], next = toks[size_t(w * ctx + p + 1)];
      double z = 0;
      for (int64_t v = 0; v < m.V; ++v) z += std::exp(double(m.logit(prev, p, v)));
      sum += std::log(z) - double(m.logit(prev, p, next));
      ++n;
    }
  }
  return sum / double(n);
}

TEST(Perplexity, WindowsDropTheTailAndRespectChunks) {
  std::vector<int32_t> t(103);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i);
  auto w = make_windows(t, 25, 0);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[3].front(), 75);
  EXPECT_EQ(w[3].back(), 99);
  EXPECT_EQ(make_windows(t, 25, 2).size(), 2u);
  EXPECT_THROW(make_windows(t, 200, 0), Error);
  EXPECT_THROW(make_windows(t, 1, 0), Error);
}

TEST(Perplexity, MatchesClosedFormForEveryStep) {
  const int64_t V = 37, ctx = 50;
  const auto toks = random_tokens(ctx * 3 + 11, V, 9);
  const auto windows = make_windows(toks, ctx, 0);
  for (int64_t step : {0, 1, 7, 32, 50}) {
    FakeModel m(V, ctx, 1);
    PerplexityOptions opt;
    opt.step = step;
    int windows_done = 0;
    opt.progress = [&](const PerplexityProgress& p) { windows_done += p.window_done; };
    const PerplexityResult r = run_perplexity(m, windows, opt);
    EXPECT_EQ(m.resets, 3);
    EXPECT_EQ(windows_done, 3);
    EXPECT_EQ(r.nll.count(), 3 * (ctx - 1));
    EXPECT_EQ(r.tokens_fed, 3 * ctx);
    const int64_t s = step == 0 ? ctx : step;
    EXPECT_EQ(m.calls.front(), s);
    EXPECT_EQ(int64_t(m.calls.size()), 3 * ((ctx + s - 1) / s));
    EXPECT_NEAR(r.nll.mean(), reference_mean_nll(m, toks, ctx, 3), 1e-9) << step;
    ASSERT_EQ(r.window_ppl.size(), 3u);
    EXPECT_FALSE(r.kl.has_value());
  }
}

TEST(Perplexity, KlAgainstSavedBase) {
  const int64_t V = 29, ctx = 20;
  const auto toks = random_tokens(ctx * 2, V, 11);
  const auto windows = make_windows(toks, ctx, 0);
  LogitsRunInfo info;
  info.n_vocab = V;
  info.ctx = ctx;
  info.rows_per_window = ctx - 1;
  for (auto& w : windows) info.window_hashes.push_back(hash_tokens(w.data(), ctx));
  LogitsFile base_file(info, int(V), 0.0);  // keeps whole rows: the KL is exact
  FakeModel base(V, ctx, 1);
  PerplexityOptions opt;
  opt.save_logits = &base_file;
  const PerplexityResult rb = run_perplexity(base, windows, opt);
  ASSERT_EQ(base_file.n_rows(), 2 * (ctx - 1));

  FakeModel test(V, ctx, 1);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g(0, 0.3f);
  for (auto& x : test.A) x += g(rng);
  PerplexityOptions opt2;
  opt2.kl_base = &base_file;
  const PerplexityResult rt = run_perplexity(test, windows, opt2);
  ASSERT_TRUE(rt.kl.has_value());
  // Reference: exact KL per position from both fakes' full logits.
  std::vector<float> lb(static_cast<size_t>(V)), lt(static_cast<size_t>(V));
  double sum = 0;
  int same = 0, n = 0;
  for (const auto& w : windows)
    for (int64_t p = 0; p + 1 < ctx; ++p, ++n) {
      for (int64_t v = 0; v < V; ++v) lb[size_t(v)] = base.logit(w[size_t(p)], p, v), lt[size_t(v)] = test.logit(w[size_t(p)], p, v);
      sum += kl_divergence_full(lb.data(), lt.data(), V);
      same += argmax(lb.data(), V) == argmax(lt.data(), V);
    }
  EXPECT_NEAR(rt.kl->mean, sum / n, 1e-6);
  EXPECT_GT(rt.kl->mean, 1e-3);
  EXPECT_NEAR(rt.kl->same_top_rate, double(same) / n, 1e-12);
  EXPECT_NEAR(rt.base_nll->mean(), rb.nll.mean(), 1e-6);
  EXPECT_NEAR(std::exp(rt.delta_nll->mean()), rt.nll.ppl() / rb.nll.ppl(), 1e-6);
  // Base against itself: KL ~ 0, full agreement.
  const PerplexityResult rs = run_perplexity(base, windows, opt2);
  EXPECT_LT(rs.kl->max, 1e-6);
  EXPECT_EQ(rs.kl->same_top_rate, 1.0);
}

}  // namespace
}  // namespace aquakv::eval
