// Tests of calib/ridge and calib/linalg: planted maps are recovered within bounds derived from
// the noise level, streaming accumulation equals one-shot accumulation, reduced rank recovers a
// planted low-rank map, damping behaves as documented, singular systems take the eigen path.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "aquakv/calib/linalg.h"
#include "aquakv/calib/ridge.h"

namespace aquakv {
namespace {

struct Data {
  int64_t n, in, out;
  std::vector<float> x, y;
  std::vector<double> w, b;  // planted (in, out), (out)
};

// Y = X W + b + sigma * noise with X ~ N(mean 0.5, 1); W optionally of rank `rank`.
Data planted(int64_t n, int64_t in, int64_t out, double sigma, int64_t rank, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0, 1);
  Data d{n, in, out, std::vector<float>(size_t(n * in)), std::vector<float>(size_t(n * out)),
         std::vector<double>(size_t(in * out)), std::vector<double>(size_t(out))};
  if (rank == 0) {
    for (auto& e : d.w) e = g(rng) / std::sqrt(double(in));
  } else {
    std::vector<double> u(size_t(in * rank)), v(size_t(rank * out));
    for (auto& e : u) e = g(rng);
    for (auto& e : v) e = g(rng) / std::sqrt(double(in * rank));
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < out; ++j)
        for (int64_t c = 0; c < rank; ++c) d.w[size_t(i * out + j)] += u[size_t(i * rank + c)] * v[size_t(c * out + j)];
  }
  for (auto& e : d.b) e = g(rng);
  for (auto& e : d.x) e = float(0.5 + g(rng));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < out; ++j) {
      double acc = d.b[size_t(j)];
      for (int64_t i = 0; i < in; ++i) acc += double(d.x[size_t(t * in + i)]) * d.w[size_t(i * out + j)];
      d.y[size_t(t * out + j)] = float(acc + sigma * g(rng));
    }
  return d;
}

NormalEquations accumulate(const Data& d, int64_t chunk) {
  NormalEquations ne(d.in, d.out);
  for (int64_t r = 0; r < d.n; r += chunk) {
    const int64_t m = std::min(chunk, d.n - r);
    const AffineInput in{d.x.data() + r * d.in, d.in, d.in};
    ne.add(m, &in, 1, d.y.data() + r * d.out, d.out);
  }
  return ne;
}

// Dense effective weight of a map (in, out).
std::vector<double> dense(const AffineMap& m) {
  std::vector<double> w(size_t(m.in * m.out), 0.0);
  for (int64_t i = 0; i < m.in; ++i)
    for (int64_t j = 0; j < m.out; ++j) {
      if (m.rank == 0) {
        w[size_t(i * m.out + j)] = m.w[size_t(i * m.out + j)];
      } else {
        for (int64_t c = 0; c < m.rank; ++c)
          w[size_t(i * m.out + j)] += double(m.u[size_t(i * m.rank + c)]) * m.v[size_t(c * m.out + j)];
      }
    }
  return w;
}

TEST(Ridge, RecoversPlantedMapWithoutDamping) {
  const double sigma = 0.01;
  const Data d = planted(4000, 24, 8, sigma, 0, 1);
  const RidgeFit fit = fit_ridge(accumulate(d, 4000), {0.0, 0});
  EXPECT_EQ(fit.method, SolveMethod::kCholesky);
  // OLS estimate: std of each coefficient ~ sigma / sqrt(n * var(x)) = 1.6e-4 (x has var 1;
  // the intercept's std is ~ sigma * sqrt(1 + mean^2 * in) / sqrt(n) ~ 4e-4). Allow 6 std.
  const auto w = dense(fit.map);
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) worst = std::max(worst, std::abs(w[i] - d.w[i]));
  EXPECT_LT(worst, 6 * sigma / std::sqrt(4000.0)) << "worst weight error";
  for (int64_t j = 0; j < d.out; ++j)
    EXPECT_NEAR(fit.map.bias[size_t(j)], d.b[size_t(j)], 6 * 4e-4) << j;
}

TEST(Ridge, DampingIsRelativeToMeanDiagonalAndShrinks) {
  const Data d = planted(3000, 16, 4, 0.05, 0, 2);
  const NormalEquations ne = accumulate(d, 3000);
  double tr = 0;
  for (int64_t i = 0; i <= 16; ++i) tr += ne.a()[size_t(i * 17 + i)];
  double prev_norm = INFINITY, prev_sse = 0;
  for (double damp : {0.0, 1e-3, 1e-1, 10.0}) {
    const RidgeFit fit = fit_ridge(ne, {damp, 0});
    EXPECT_DOUBLE_EQ(fit.lambda, damp * tr / 17);
    double norm = 0;
    for (float v : fit.map.w) norm += double(v) * v;
    for (float v : fit.map.bias) norm += double(v) * v;
    // Ridge: ||W1|| decreases and the training error increases as lambda grows.
    EXPECT_LT(norm, prev_norm) << damp;
    const double sse = sse_from_stats(ne, fit.map);
    EXPECT_GE(sse, prev_sse * (1 - 1e-9)) << damp;
    prev_norm = norm;
    prev_sse = sse;
  }
  // Default damping only shrinks slightly: coefficients within 1% of the planted ones' scale.
  const auto w = dense(fit_ridge(ne).map);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(w[i], d.w[i], 0.01) << i;
}

TEST(Ridge, StreamingInChunksEqualsAllAtOnce) {
  const Data d = planted(5000, 12, 5, 0.1, 0, 3);
  const NormalEquations all = accumulate(d, 5000);
  for (int64_t chunk : {1, 7, 999, 2048}) {
    const NormalEquations part = accumulate(d, chunk);
    ASSERT_EQ(part.rows(), all.rows());
    for (size_t i = 0; i < all.a().size(); ++i)
      ASSERT_NEAR(part.a()[i], all.a()[i], 1e-10 * (1 + std::abs(all.a()[i]))) << chunk;
    for (size_t i = 0; i < all.b().size(); ++i)
      ASSERT_NEAR(part.b()[i], all.b()[i], 1e-10 * (1 + std::abs(all.b()[i]))) << chunk;
    ASSERT_NEAR(part.y_sq(), all.y_sq(), 1e-10 * all.y_sq());
  }
  // merge() of two halves == the whole.
  Data h1 = d, h2 = d;
  h1.n = 2000;
  h2.x.erase(h2.x.begin(), h2.x.begin() + 2000 * 12);
  h2.y.erase(h2.y.begin(), h2.y.begin() + 2000 * 5);
  h2.n = 3000;
  NormalEquations m = accumulate(h1, 500);
  m.merge(accumulate(h2, 3000));
  for (size_t i = 0; i < all.a().size(); ++i) ASSERT_NEAR(m.a()[i], all.a()[i], 1e-10 * (1 + std::abs(all.a()[i])));
}

TEST(Ridge, StatsErrorEqualsDirectError) {
  const Data d = planted(2000, 10, 6, 0.3, 0, 4);
  const NormalEquations ne = accumulate(d, 2000);
  for (int64_t rank : {0, 2}) {
    const AffineMap m = fit_ridge(ne, {1e-3, rank}).map;
    std::vector<float> pred(size_t(d.n * d.out)), scratch;
    const AffineInput in{d.x.data(), d.in, d.in};
    m.apply(d.n, &in, 1, pred.data(), d.out, scratch);
    ErrorStats es;
    es.add(d.n, pred.data(), d.out, d.y.data(), d.out, d.out);
    EXPECT_NEAR(sse_from_stats(ne, m), es.err_sq, 1e-4 * es.err_sq) << rank;
    EXPECT_NEAR(es.y_sq, ne.y_sq(), 1e-9 * es.y_sq);
  }
}

TEST(Ridge, ReducedRankRecoversPlantedLowRankMap) {
  const double sigma = 0.01;
  const Data d = planted(6000, 20, 16, sigma, 3, 5);
  const NormalEquations ne = accumulate(d, 6000);
  const RidgeFit r3 = fit_ridge(ne, {0.0, 3});
  ASSERT_EQ(r3.map.rank, 3);
  EXPECT_EQ(r3.map.u.size(), 20u * 3);
  EXPECT_EQ(r3.map.v.size(), 3u * 16);
  const auto w = dense(r3.map);
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) worst = std::max(worst, std::abs(w[i] - d.w[i]));
  EXPECT_LT(worst, 6 * sigma / std::sqrt(6000.0));
  for (int64_t j = 0; j < 16; ++j) EXPECT_NEAR(r3.map.bias[size_t(j)], d.b[size_t(j)], 3e-3);
  // Rank 2 cannot represent a rank-3 map: its error is far above the noise floor
  // (sigma^2 * n * out = 9.6e-3), rank 3 sits at the noise floor.
  const double floor = sigma * sigma * 6000 * 16;
  EXPECT_LT(sse_from_stats(ne, r3.map), 1.2 * floor);
  EXPECT_GT(sse_from_stats(ne, fit_ridge(ne, {0.0, 2}).map), 10 * floor);
}

TEST(Linalg, SingularSystemFallsBackToPseudoInverse) {
  // Duplicate input column: A is singular without damping. The minimum-norm solution splits the
  // weight equally between the two copies and still predicts exactly.
  Data d = planted(500, 3, 2, 0.0, 0, 6);
  std::vector<float> x4(size_t(500 * 4));
  for (int64_t t = 0; t < 500; ++t) {
    for (int i = 0; i < 3; ++i) x4[size_t(t * 4 + i)] = d.x[size_t(t * 3 + i)];
    x4[size_t(t * 4 + 3)] = d.x[size_t(t * 3 + 2)];
  }
  NormalEquations ne(4, 2);
  const AffineInput in{x4.data(), 4, 4};
  ne.add(500, &in, 1, d.y.data(), 2);
  const RidgeFit fit = fit_ridge(ne, {0.0, 0});
  EXPECT_EQ(fit.method, SolveMethod::kEigen);
  for (int j = 0; j < 2; ++j) {
    EXPECT_NEAR(fit.map.w[size_t(2 * 2 + j)], fit.map.w[size_t(3 * 2 + j)], 1e-4);
    EXPECT_NEAR(fit.map.w[size_t(2 * 2 + j)] + fit.map.w[size_t(3 * 2 + j)], d.w[size_t(2 * 2 + j)], 1e-4);
  }
  EXPECT_LT(sse_from_stats(ne, fit.map), 1e-6 * ne.y_sq());
  // With damping the same system is positive definite and Cholesky solves it.
  EXPECT_EQ(fit_ridge(ne).method, SolveMethod::kCholesky);
}

TEST(Linalg, EighReconstructsMatrix) {
  std::mt19937 rng(9);
  std::normal_distribution<double> g(0, 1);
  const int n = 7;
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) a[size_t(i * n + j)] = a[size_t(j * n + i)] = g(rng);
  std::vector<double> w, v;
  eigh(n, a, w, v);
  for (int i = 0; i + 1 < n; ++i) EXPECT_LE(w[size_t(i)], w[size_t(i + 1)]);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += v[size_t(i * n + k)] * w[size_t(k)] * v[size_t(j * n + k)];
      EXPECT_NEAR(s, a[size_t(i * n + j)], 1e-12);
    }
}

TEST(Ridge, EquivalentBits) {
  EXPECT_DOUBLE_EQ(equivalent_bits(0.25), 1.0);
  EXPECT_NEAR(equivalent_bits(0.1077), 1.61, 0.01);
}

}  // namespace
}  // namespace aquakv
