// Tests of quant/hadamard.h: against the explicit matrices (Sylvester entries and Kronecker
// products), H H = n I exactly on integer inputs, norm preservation, SIMD == scalar bit for bit.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "aquakv/quant/hadamard.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

const std::vector<int64_t> kSizes = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 65536,
                                     12, 24, 48, 96, 192, 384, 768, 12 * 4096,
                                     20, 40, 80, 160, 320, 640, 20 * 2048};

struct ScalarGuard {
  SimdLevel saved = simd_level();
  ~ScalarGuard() { set_simd_level(saved); }
};

// Entry (a, b) of the transform of order n = p * m built from first principles: Sylvester
// entry (-1)^popcount(a2 & b2) times the Paley entry of the outer factor.
int entry(int64_t n, int64_t a, int64_t b) {
  int p = 1;
  if (n % 12 == 0 && std::has_single_bit(uint64_t(n / 12))) p = 12;
  if (n % 20 == 0 && std::has_single_bit(uint64_t(n / 20))) p = 20;
  const int64_t m = n / p;
  const int syl = (std::popcount(uint64_t((a % m) & (b % m))) & 1) ? -1 : 1;
  if (p == 1) return syl;
  static const auto h12 = paley_hadamard(11), h20 = paley_hadamard(19);
  const auto& h = p == 12 ? h12 : h20;
  return syl * h[size_t((a / m) * p + b / m)];
}

TEST(Hadamard, PaleyMatricesAreHadamard) {
  for (int q : {11, 19}) {
    const int p = q + 1;
    const auto h = paley_hadamard(q);
    for (int i = 0; i < p; ++i) {
      for (int j = 0; j < p; ++j) {
        ASSERT_TRUE(h[size_t(i * p + j)] == 1 || h[size_t(i * p + j)] == -1);
        int dot = 0;
        for (int k = 0; k < p; ++k) dot += h[size_t(i * p + k)] * h[size_t(j * p + k)];
        ASSERT_EQ(dot, i == j ? p : 0) << "q=" << q << " rows " << i << "," << j;
        ASSERT_EQ(h[size_t(i * p + j)], h[size_t(j * p + i)]) << "not symmetric, q=" << q;
      }
    }
  }
}

TEST(Hadamard, SupportedOrders) {
  for (int64_t n : kSizes) EXPECT_TRUE(hadamard_supported(n)) << n;
  for (int64_t n : {0, 3, 6, 36, 100, 131072, 12 * 8192, 28, 60}) EXPECT_FALSE(hadamard_supported(n)) << n;
  EXPECT_THROW(HadamardRotation(100), Error);
  EXPECT_THROW(HadamardRotation(0), Error);
}

TEST(Hadamard, MatchesExplicitMatrix) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 2, 4, 8, 16, 64, 256, 12, 24, 96, 192, 20, 40, 320}) {
    for (SimdLevel lvl : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
      if (lvl > cpu_simd_level()) continue;
      ScalarGuard g;
      set_simd_level(lvl);
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = float(int(rng() % 17) - 8);
      std::vector<float> y = x;
      hadamard_transform(y.data(), n);
      for (int64_t a = 0; a < n; ++a) {
        double want = 0;
        for (int64_t b = 0; b < n; ++b) want += entry(n, a, b) * double(x[size_t(b)]);
        ASSERT_EQ(double(y[size_t(a)]), want) << "n=" << n << " row " << a;
      }
    }
  }
}

TEST(Hadamard, TwiceIsNTimesIdentityOnIntegers) {
  std::mt19937 rng(2);
  for (int64_t n : kSizes) {
    // Partial sums stay below 2^24 (exact in float) when n * n * max|x| < 2^24.
    const int amp = n <= 1024 ? 8 : 1;
    if (double(n) * double(n) * amp >= 16777216.0) continue;
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = float(int(rng() % (2 * amp + 1)) - amp);
    std::vector<float> y = x;
    hadamard_transform(y.data(), n);
    hadamard_transform(y.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[size_t(i)], float(n) * x[size_t(i)]) << "n=" << n << " i=" << i;
  }
}

TEST(Hadamard, PreservesNormsAndRotationInverts) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (int64_t n : kSizes) {
    for (uint64_t seed : {uint64_t(0), uint64_t(99)}) {
      const HadamardRotation rot(n, seed);
      const int64_t rows = 3;
      std::vector<float> x(size_t(n * rows));
      for (auto& v : x) v = nd(rng);
      std::vector<float> y = x;
      rot.forward(y.data(), rows);
      for (int64_t r = 0; r < rows; ++r) {
        double nx = 0, ny = 0;
        for (int64_t i = 0; i < n; ++i) {
          nx += double(x[size_t(r * n + i)]) * x[size_t(r * n + i)];
          ny += double(y[size_t(r * n + i)]) * y[size_t(r * n + i)];
        }
        ASSERT_NEAR(ny / (double(n) * nx), 1.0, 1e-5) << "n=" << n;
      }
      rot.inverse(y.data(), rows);
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, double(std::fabs(y[i] - x[i])));
      ASSERT_LT(worst, 1e-5 * std::sqrt(double(n))) << "n=" << n;
    }
  }
}

TEST(Hadamard, SignsDependOnSeedAndAreApplied) {
  const int64_t n = 64;
  std::vector<float> e(size_t(n), 0.0f), a, b, c;
  e[5] = 1.0f;
  a = b = c = e;
  HadamardRotation(n, 0).forward(a.data());
  HadamardRotation(n, 1).forward(b.data());
  HadamardRotation(n, 2).forward(c.data());
  // A unit vector maps to +-(column 5 of H); a sign flip of coordinate 5 negates it.
  int diff_ab = 0, diff_bc = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(std::fabs(a[size_t(i)]), 1.0f);
    diff_ab += a[size_t(i)] != b[size_t(i)];
    diff_bc += b[size_t(i)] != c[size_t(i)];
  }
  // Over 64 coordinates the seeds 1 and 2 must not produce the same signs everywhere.
  int differing_signs = 0;
  for (int64_t k = 0; k < n; ++k) {
    std::vector<float> u(static_cast<size_t>(n), 0.0f), v;
    u[size_t(k)] = 1.0f;
    v = u;
    HadamardRotation(n, 1).forward(u.data());
    HadamardRotation(n, 2).forward(v.data());
    differing_signs += u[0] != v[0];
  }
  EXPECT_GT(differing_signs, 10);
  EXPECT_LT(differing_signs, 54);
  EXPECT_TRUE(diff_ab == 0 || diff_ab == n);
}

// Every SIMD level the CPU has (AVX2: 8-float vectors; AVX-512: 16-float registers for orders
// whose power-of-two factor is a multiple of 16, the next level below for the others), on the
// transform and on the rotation with signs and a scale.
TEST(Hadamard, SimdEqualsScalarBitForBit) {
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (SimdLevel lvl : {SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (lvl > cpu_simd_level()) continue;
    for (int64_t n : kSizes) {
      std::vector<float> x(static_cast<size_t>(n));
      for (auto& v : x) v = nd(rng) * 3.0f;
      std::vector<float> a = x, b = x;
      hadamard_transform_scalar(a.data(), n);
      ScalarGuard g;
      set_simd_level(lvl);
      hadamard_transform(b.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(a[size_t(i)]), std::bit_cast<uint32_t>(b[size_t(i)]))
            << simd_level_name(lvl) << " n=" << n << " i=" << i;
      }
      // Rotation: 3 rows, signs, forward then the inverse with a scale.
      const HadamardRotation rot(n, 7);
      std::vector<float> r(static_cast<size_t>(3 * n));
      for (auto& v : r) v = nd(rng);
      std::vector<float> want = r;
      set_simd_level(SimdLevel::kScalar);
      rot.forward(want.data(), 3);
      rot.inverse(want.data(), 3, 0.37f);
      set_simd_level(lvl);
      rot.forward(r.data(), 3);
      rot.inverse(r.data(), 3, 0.37f);
      for (size_t i = 0; i < r.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(want[i]), std::bit_cast<uint32_t>(r[i]))
            << simd_level_name(lvl) << " rotation n=" << n << " i=" << i;
      }
    }
  }
}

}  // namespace
}  // namespace aquakv
