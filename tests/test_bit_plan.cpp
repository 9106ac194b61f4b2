// Tests of calib/bit_plan (per-layer bit allocation) and of the query statistics the recording
// cache gathers for it: the allocation equals exhaustive search on small instances; the planner's
// proxy equals the published formula computed here in double from the codec's round trip; the
// plan respects the budget; the query statistics equal a float64 sum with RoPE pairs averaged
// (adjacent pairs for normal RoPE, half-split pairs for NeoX).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "aquakv/calib/bit_plan.h"
#include "aquakv/calib/capture.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "test_codecs.h"

namespace aquakv {
namespace {

// Every combination of options, in double.
double brute_force(const std::vector<std::vector<double>>& cost, const std::vector<std::vector<int64_t>>& bytes,
                   int64_t budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> pick(cost.size(), 0);
  for (;;) {
    double c = 0;
    int64_t b = 0;
    for (size_t i = 0; i < cost.size(); ++i) {
      c += cost[i][pick[i]];
      b += bytes[i][pick[i]];
    }
    if (b <= budget) best = std::min(best, c);
    size_t i = 0;
    while (i < pick.size() && ++pick[i] == cost[i].size()) pick[i++] = 0;
    if (i == pick.size()) return best;
  }
}

TEST(BitPlan, AllocationEqualsExhaustiveSearch) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 6, opts = 1 + rng() % 4;
    std::vector<std::vector<double>> cost(n);
    std::vector<std::vector<int64_t>> bytes(n);
    int64_t lo = 0, hi = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t mn = 1 << 30, mx = 0;
      for (size_t j = 0; j < opts; ++j) {
        cost[i].push_back(u(rng));
        bytes[i].push_back(int64_t(rng() % 20));
        mn = std::min(mn, bytes[i].back());
        mx = std::max(mx, bytes[i].back());
      }
      lo += mn;
      hi += mx;
    }
    const int64_t budget = lo + int64_t(rng() % uint32_t(hi - lo + 1));
    const auto choice = allocate_min_cost(cost, bytes, budget);
    ASSERT_EQ(choice.size(), n);
    double c = 0;
    int64_t b = 0;
    for (size_t i = 0; i < n; ++i) {
      c += cost[i][size_t(choice[i])];
      b += bytes[i][size_t(choice[i])];
    }
    EXPECT_LE(b, budget) << "trial " << trial;
    EXPECT_NEAR(c, brute_force(cost, bytes, budget), 1e-12) << "trial " << trial;
    if (lo > 0) {
      EXPECT_THROW(allocate_min_cost(cost, bytes, lo - 1), Error);
    }
  }
}

// Two layers, 2 KV heads of 4 channels, 2 query heads per KV head.
KvSamples small_samples(std::mt19937& rng) {
  std::normal_distribution<double> g(0, 1);
  KvSamples s;
  s.n_layers = 3;
  s.width = 8;
  s.n_train = 500;
  s.n_val = 20;
  s.n_kv_heads = 2;
  s.q_group = 2;
  s.q_rows = 40;
  s.k.assign(3, std::vector<uint16_t>(size_t(s.rows() * 8)));
  s.v.assign(3, std::vector<uint16_t>(size_t(s.rows() * 8)));
  for (int l = 0; l < 3; ++l)
    for (size_t i = 0; i < s.v[size_t(l)].size(); ++i) {
      s.k[size_t(l)][i] = fp32_to_fp16(float(g(rng)));
      s.v[size_t(l)][i] = fp32_to_fp16(float((1 + double(i % 8)) * g(rng) + 0.5));
    }
  s.q2.assign(3, std::vector<double>(8));
  for (auto& row : s.q2)
    for (auto& x : row) x = 40.0 * (0.1 + std::abs(g(rng)));
  return s;
}

void check_proxy(bool output_weights) {
  std::mt19937 rng(3);
  KvSamples s = small_samples(rng);
  if (output_weights) {
    s.wo2.assign(3, std::vector<double>(8));
    for (int l = 0; l < 3; ++l)
      for (int c = 0; c < 8; ++c) s.wo2[size_t(l)][size_t(c)] = 0.2 + 0.3 * ((c * 7 + l) % 5);
  }
  std::vector<std::shared_ptr<const Codec>> cands = {std::make_shared<CoarseCodec>(8, 2),
                                                     std::make_shared<CoarseCodec>(8, 4)};
  BitPlanner p(s, cands, true, 2.5, /*max_rows=*/100);  // every 5th training row
  std::normal_distribution<double> g(0, 1);
  const int64_t rows = s.rows();
  std::vector<float> y(size_t(rows * 8)), pred(size_t(rows * 8));
  for (auto& x : y) x = float(g(rng));
  for (auto& x : pred) x = float(0.3 * g(rng));
  p.measure(1, true, y, pred);
  p.measure(1, false, y, pred);
  // The formula of bit_plan.h in double: rows 0, 5, 10, ... of the 500 training rows.
  std::vector<int64_t> used;
  for (int64_t r = 0; r < s.n_train; r += 5) used.push_back(r);
  for (size_t j = 0; j < cands.size(); ++j) {
    std::vector<double> e2(8, 0.0);
    for (int64_t r : used) {
      float x[8], dec[8];
      uint8_t codes[64];
      for (int c = 0; c < 8; ++c) x[c] = y[size_t(r * 8 + c)] - pred[size_t(r * 8 + c)];
      cands[j]->encode(x, 1, codes);
      cands[j]->decode(codes, 1, dec);
      for (int c = 0; c < 8; ++c) e2[size_t(c)] += (double(dec[c]) - x[c]) * (double(dec[c]) - x[c]) / double(used.size());
    }
    double key = 0, value = 0;
    for (int h = 0; h < 2; ++h) {
      // tv_h: variance of the layer's values of head h over the training rows.
      double tv = 0, wk = 0, ev = 0;
      for (int c = h * 4; c < h * 4 + 4; ++c) {
        double m = 0, m2 = 0;
        for (int64_t r = 0; r < s.n_train; ++r) {
          const double v = fp16_to_fp32(s.v[1][size_t(r * 8 + c)]);
          m += v / double(s.n_train);
          m2 += v * v / double(s.n_train);
        }
        // Without output weights: each of the q_group = 2 query heads sees the value error
        // and the value spread as is; with them, through W_o (per query head: u_c / 2).
        const double u = output_weights ? s.wo2[1][size_t(c)] : 2.0;
        tv += u / 2.0 * (m2 - m * m);
        wk += s.q2[1][size_t(c)] / double(s.q_rows) * e2[size_t(c)];
        ev += u * e2[size_t(c)];
      }
      key += 2.5 * wk * tv;
      value += ev;
    }
    EXPECT_NEAR(p.cost(1, 0, int(j)), key, 1e-9 * key) << "candidate " << j;
    EXPECT_NEAR(p.cost(1, 1, int(j)), value, 1e-9 * value) << "candidate " << j;
  }
  // Relative costs: divided by the layer's output energy sum_c u_c E(v_c^2).
  BitPlanner rel(s, cands, true, 2.5, 100);
  rel.set_layer_norm(true);
  rel.measure(1, true, y, pred);
  rel.measure(1, false, y, pred);
  double energy = 0;
  for (int c = 0; c < 8; ++c)
    for (int64_t r = 0; r < s.n_train; ++r) {
      const double v = fp16_to_fp32(s.v[1][size_t(r * 8 + c)]);
      energy += (output_weights ? s.wo2[1][size_t(c)] : 1.0) * v * v / double(s.n_train);
    }
  for (int st = 0; st < 2; ++st)
    EXPECT_NEAR(rel.cost(1, st, 1), p.cost(1, st, 1) / energy, 1e-9 * p.cost(1, st, 1) / energy);
  if (output_weights) return;
  // Without query weights both streams are plain squared error.
  BitPlanner mse(s, cands, false, 2.5, 100);
  mse.measure(1, true, y, pred);
  mse.measure(1, false, y, pred);
  EXPECT_NEAR(mse.cost(1, 0, 0), mse.cost(1, 1, 0), 1e-12);
}

TEST(BitPlan, ProxyIsThePublishedFormula) {
  check_proxy(false);
  check_proxy(true);
}

TEST(BitPlan, PlanStaysWithinTheBudget) {
  std::mt19937 rng(5);
  const KvSamples s = small_samples(rng);
  // CoarseCodec(8, b): 4 scale bytes + 8 code bytes per row whatever b, so use codecs of
  // different sizes: HalfCodec (16 bytes) and CoarseCodec (12 bytes).
  std::vector<std::shared_ptr<const Codec>> cands = {std::make_shared<CoarseCodec>(8, 2), std::make_shared<HalfCodec>(8)};
  BitPlanner p(s, cands);
  std::normal_distribution<double> g(0, 1);
  std::vector<float> y(size_t(s.rows() * 8)), pred(y.size(), 0.f);
  for (auto& x : y) x = float(g(rng));
  EXPECT_THROW(p.plan(8.0, 16), Error);  // layers 1 and 2 not measured yet
  for (int l = 1; l < 3; ++l) {
    p.measure(l, true, y, pred);
    p.measure(l, false, y, pred);
  }
  // 3 layers x 2 streams x 8 values; layer 0 at 16 bytes per row and stream.
  // All coarse: (2*16 + 4*12) * 8 / 48 = 13.33 bits; all half: 16 bits.
  EXPECT_THROW(p.plan(13.0, 16), Error);
  for (double bits : {13.34, 14.0, 14.7, 16.0}) {
    const auto plan = p.plan(bits, 16);
    EXPECT_LE(p.bits_per_value(plan, 16), bits + 1e-9);
    int half = 0;
    for (int l = 1; l < 3; ++l) half += (plan[size_t(l)][0] == 1) + (plan[size_t(l)][1] == 1);
    // The lossless codec is strictly better, so the plan takes as many as the budget allows.
    EXPECT_EQ(half, std::min(4, int(std::floor((std::floor(bits * 48 / 8 + 1e-9) - 2 * 16 - 4 * 12) / 4)))) << bits;
  }
}

// Query statistics: one attention call of 3 tokens, 4 query heads over 2 KV heads of 4 dims.
void check_query_stats(RopeType type) {
  KvShape shape;
  shape.n_layers = 2;
  shape.n_kv_heads = 2;
  shape.head_dim = 4;
  shape.max_tokens = 16;
  shape.rope.type = type;
  shape.rope.n_rot = 4;
  RecordingCache cache(shape);
  const int seq = cache.add_sequence();
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0, 1);
  const int n = 3, nh = 4;
  std::vector<float> q(size_t(n * nh * 4)), out(q.size()), k(size_t(n * 8)), v(k.size());
  for (auto& x : q) x = g(rng);
  for (auto& x : k) x = g(rng);
  for (auto& x : v) x = g(rng);
  cache.begin_step(seq, n);
  for (int l = 0; l < 2; ++l) {
    cache.append(l, k.data(), v.data());
    KvAttention a;
    a.n = n;
    a.q = q.data();
    a.out = out.data();
    a.n_heads = nh;
    a.scale = 0.5f;
    cache.attend(l, a);
  }
  cache.end_step();
  const KvSamples s = cache.take_samples({seq}, {});
  ASSERT_EQ(s.q2.size(), 2u);
  EXPECT_EQ(s.q_rows, n);
  EXPECT_EQ(s.q_group, 2);
  EXPECT_EQ(s.n_kv_heads, 2);
  // Reference: sum over tokens and the 2 query heads of each KV head of (0.5 q)^2, then the
  // two channels of each RoPE pair averaged.
  double raw[8] = {};
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < nh; ++h)
      for (int i = 0; i < 4; ++i) raw[(h / 2) * 4 + i] += 0.25 * double(q[size_t((t * nh + h) * 4 + i)]) * q[size_t((t * nh + h) * 4 + i)];
  for (int kh = 0; kh < 2; ++kh) {
    const int a0 = type == RopeType::kNeox ? 0 : 0, b0 = type == RopeType::kNeox ? 2 : 1;
    const int a1 = type == RopeType::kNeox ? 1 : 2, b1 = type == RopeType::kNeox ? 3 : 3;
    for (auto [a, b] : {std::pair{a0, b0}, std::pair{a1, b1}}) {
      const double want = 0.5 * (raw[kh * 4 + a] + raw[kh * 4 + b]);
      for (int l = 0; l < 2; ++l) {
        EXPECT_NEAR(s.q2[size_t(l)][size_t(kh * 4 + a)], want, 1e-9 * want);
        EXPECT_NEAR(s.q2[size_t(l)][size_t(kh * 4 + b)], want, 1e-9 * want);
      }
    }
  }
}

TEST(BitPlan, QueryStatisticsAverageRopePairs) {
  check_query_stats(RopeType::kNormal);
  check_query_stats(RopeType::kNeox);
}

}  // namespace
}  // namespace aquakv
