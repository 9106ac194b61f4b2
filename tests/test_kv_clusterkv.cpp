// Tests of ClusterKV (kv/clusterkv_cache.h): every query's attention output equals a float64
// brute-force replay of the rule written here (spherical k-means per head on the fp16 keys,
// clusters ranked by q . centroid, whole clusters up to the budget, exact softmax over sinks,
// recalled and unclustered rows); with a budget above the context it equals full attention; the
// share attended drops below 1 once clusters exist; bad specs are refused with one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/clusterkv_cache.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

#include "kv_spec_checks.h"

namespace aquakv {
namespace {

constexpr int kL = 2, kH = 2, kHd = 8, kC = kH * kHd, kQH = 4;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 2048;
  return s;
}

float h(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

struct RefCluster {
  std::vector<double> c;
  std::vector<int64_t> rows;
};

// The rule, replayed: clusters per (layer, head) made from the stored (fp16) keys.
struct Reference {
  ClusterKvOptions o;
  std::vector<std::vector<float>> k, v;  // per layer (rows, C)
  std::vector<std::vector<std::vector<RefCluster>>> cl{size_t(kL), std::vector<std::vector<RefCluster>>(kH)};
  int64_t T = 0, end = 0;
  void cluster(int l, int g, int64_t r0) {
    const int64_t M = o.chunk, K = std::max<int64_t>(1, M / o.per_cluster);
    std::vector<std::vector<double>> x(static_cast<size_t>(M), std::vector<double>(kHd));
    for (int64_t r = 0; r < M; ++r) {
      double n2 = 0;
      for (int c = 0; c < kHd; ++c) n2 += std::pow(double(k[size_t(l)][size_t((r0 + r) * kC + g * kHd + c)]), 2);
      for (int c = 0; c < kHd; ++c) x[size_t(r)][size_t(c)] = double(k[size_t(l)][size_t((r0 + r) * kC + g * kHd + c)]) / std::sqrt(n2);
    }
    std::vector<std::vector<double>> cen(static_cast<size_t>(K));
    for (int64_t j = 0; j < K; ++j) cen[size_t(j)] = x[size_t(j * M / K)];
    std::vector<int64_t> as(static_cast<size_t>(M));
    for (int it = 0; it < 8; ++it) {
      for (int64_t r = 0; r < M; ++r) {
        double best = -1e300;
        for (int64_t j = 0; j < K; ++j) {
          double d = 0;
          for (int c = 0; c < kHd; ++c) d += x[size_t(r)][size_t(c)] * cen[size_t(j)][size_t(c)];
          if (d > best) best = d, as[size_t(r)] = j;
        }
      }
      if (it == 7) break;
      for (int64_t j = 0; j < K; ++j) {
        std::vector<double> m(kHd, 0.0);
        for (int64_t r = 0; r < M; ++r)
          if (as[size_t(r)] == j)
            for (int c = 0; c < kHd; ++c) m[size_t(c)] += x[size_t(r)][size_t(c)];
        double n = 0;
        for (double e : m) n += e * e;
        if (n == 0) continue;
        for (int c = 0; c < kHd; ++c) cen[size_t(j)][size_t(c)] = m[size_t(c)] / std::sqrt(n);
      }
    }
    for (int64_t j = 0; j < K; ++j) {
      RefCluster c;
      for (int64_t r = 0; r < M; ++r)
        if (as[size_t(r)] == j) c.rows.push_back(r0 + r);
      if (c.rows.empty()) continue;
      for (double e : cen[size_t(j)]) c.c.push_back(double(float(e)));  // the cache keeps f32 centroids
      cl[size_t(l)][size_t(g)].push_back(c);
    }
  }
  void end_step(int64_t n) {
    T += n;
    if (end < o.sinks) end = std::min(o.sinks, T);
    while (T - o.recent - end >= o.chunk) {
      for (int l = 0; l < kL; ++l)
        for (int g = 0; g < kH; ++g) cluster(l, g, end);
      end += o.chunk;
    }
  }
  // Output of query q (head qh, position qp) on layer l, with `rows` rows stored (this step's too).
  std::vector<double> attend(int l, int qh, const float* q, int64_t qp, int64_t rows, float scale) const {
    const int g = qh / (kQH / kH);
    std::vector<uint8_t> take(static_cast<size_t>(rows), 0);
    for (int64_t r = 0; r < std::min(o.sinks, rows); ++r) take[size_t(r)] = 1;
    for (int64_t r = end; r < rows; ++r) take[size_t(r)] = 1;
    std::vector<std::pair<double, size_t>> rank;
    const auto& cs = cl[size_t(l)][size_t(g)];
    for (size_t j = 0; j < cs.size(); ++j) {
      double d = 0;
      for (int c = 0; c < kHd; ++c) d += double(q[c]) * cs[j].c[size_t(c)];
      rank.push_back({-d, j});
    }
    std::sort(rank.begin(), rank.end());
    int64_t got = 0;
    for (const auto& [d, j] : rank) {
      if (got >= o.budget) break;
      for (int64_t r : cs[j].rows) take[size_t(r)] = 1;
      got += int64_t(cs[j].rows.size());
    }
    std::vector<double> s, out(kHd, 0.0);
    std::vector<int64_t> used;
    double mx = -1e300;
    for (int64_t r = 0; r <= qp; ++r) {
      if (!take[size_t(r)]) continue;
      double d = 0;
      for (int c = 0; c < kHd; ++c) d += double(q[c]) * k[size_t(l)][size_t(r * kC + g * kHd + c)];
      s.push_back(d * scale);
      used.push_back(r);
      mx = std::max(mx, s.back());
    }
    double z = 0;
    for (double& e : s) z += (e = std::exp(e - mx));
    for (size_t t = 0; t < used.size(); ++t)
      for (int c = 0; c < kHd; ++c) out[size_t(c)] += s[t] / z * v[size_t(l)][size_t(used[t] * kC + g * kHd + c)];
    return out;
  }
};

void run(const ClusterKvOptions& o, double* share) {
  auto cache = make_clusterkv_cache(shape(), o);
  Reference ref{o, std::vector<std::vector<float>>(kL), std::vector<std::vector<float>>(kL)};
  const int seq = cache->add_sequence();
  std::mt19937 rng(11);
  std::normal_distribution<float> gn(0, 1);
  int64_t T = 0;
  for (int64_t n : {40, 1, 1, 60, 3, 1, 90, 1, 1, 1, 128, 7, 1, 1}) {
    cache->begin_step(seq, n);
    std::vector<float> k(size_t(n * kC)), v(size_t(n * kC)), q(size_t(n * kQH * kHd)), out(q.size());
    for (int l = 0; l < kL; ++l) {
      // Keys around a few directions, so clusters are meaningful.
      for (int64_t r = 0; r < n; ++r)
        for (int c = 0; c < kC; ++c) k[size_t(r * kC + c)] = gn(rng) + 2.0f * float(((T + r) * 7 + c) % 5 == 0);
      for (auto& e : v) e = gn(rng);
      for (auto& e : q) e = gn(rng);
      cache->append(l, k.data(), v.data());
      for (float e : k) ref.k[size_t(l)].push_back(h(e));
      for (float e : v) ref.v[size_t(l)].push_back(h(e));
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.35f;
      cache->attend(l, a);
      for (int64_t i = 0; i < n; ++i)
        for (int qh = 0; qh < kQH; ++qh) {
          const auto want = ref.attend(l, qh, q.data() + (i * kQH + qh) * kHd, T + i, T + n, a.scale);
          for (int c = 0; c < kHd; ++c)
            ASSERT_NEAR(out[size_t((i * kQH + qh) * kHd + c)], want[size_t(c)], 1e-4) << "T " << T << " query " << i << " head " << qh;
        }
    }
    cache->end_step();
    ref.end_step(n);
    T += n;
  }
  *share = clusterkv_attended_share(*cache);
  const auto bits = cache->bits_report(seq);
  EXPECT_NEAR(bits[0].bits_per_value, 16.0, 1e-9);  // every row resident
}

TEST(ClusterKv, AttentionEqualsBruteForceRecall) {
  double share = 0;
  run({64, 4, 16, 32, 8}, &share);
  EXPECT_LT(share, 0.8) << "recall never left rows out: the test checks little";
  run({40, 0, 0, 48, 5}, &share);
  EXPECT_LT(share, 0.8);
}

TEST(ClusterKv, BudgetAboveTheContextIsFullAttention) {
  double share = 0;
  run({100000, 4, 16, 32, 8}, &share);
  EXPECT_DOUBLE_EQ(share, 1.0);
}

TEST(ClusterKv, SpecsAndRefusals) {
  EXPECT_EQ(make_cache("clusterkv:256,c=8", shape())->name(), "clusterkv:256,p=4,r=128,m=128,c=8");
  EXPECT_EQ(clusterkv_attended_share(*make_cache("fp16", shape())), -1.0);
  expect_specs_refused({"clusterkv", "clusterkv:", "clusterkv:0", "clusterkv:-5", "clusterkv:x", "clusterkv:64,m=0",
                          "clusterkv:64,c=0", "clusterkv:64,c=300", "clusterkv:64,q=1", "clusterkv:64,p", "clusterkv:64,r=-1"}, shape());
}

}  // namespace
}  // namespace aquakv
