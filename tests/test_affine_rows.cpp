// Tests of ops/affine_rows: AVX2 == scalar reference bit for bit, results independent of row
// grouping and threads, and close to a float64 reference within a derived bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "aquakv/ops/affine_rows.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

struct Case {
  int64_t n, k1, k2, out;
  std::vector<float> x1, x2, w, b;
};

Case make_case(int64_t n, int64_t k1, int64_t k2, int64_t out, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.f, 1.f);
  Case c{n, k1, k2, out, {}, {}, {}, {}};
  // Row strides larger than k exercise ld handling.
  c.x1.resize(size_t(n * (k1 + 3)));
  c.x2.resize(size_t(n * (k2 + 1)));
  c.w.resize(size_t((k1 + k2) * out));
  c.b.resize(size_t(out));
  for (auto* v : {&c.x1, &c.x2, &c.w, &c.b})
    for (auto& e : *v) e = g(rng);
  return c;
}

std::vector<float> run(const Case& c, bool ref, int64_t r0, int64_t r1, int64_t ldy) {
  AffineInput in[2] = {{c.x1.data() + r0 * (c.k1 + 3), c.k1 + 3, c.k1},
                       {c.x2.data() + r0 * (c.k2 + 1), c.k2 + 1, c.k2}};
  std::vector<float> y(size_t((r1 - r0) * ldy), -7.f);
  if (ref) {
    affine_rows_ref(r1 - r0, in, 2, c.w.data(), c.out, c.b.data(), y.data(), ldy);
  } else {
    affine_rows(r1 - r0, in, 2, c.w.data(), c.out, c.b.data(), y.data(), ldy);
  }
  return y;
}

TEST(AffineRows, Avx2EqualsScalarBitForBit) {
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2";
  for (int64_t n : {0, 1, 5, 6, 7, 13, 100, 200})
    for (int64_t out : {1, 7, 8, 15, 16, 17, 33, 64}) {
      const Case c = make_case(n, 11, 5, out, uint32_t(n * 131 + out));
      const int64_t ldy = out + 2;
      set_simd_level(SimdLevel::kAvx2);
      const auto fast = run(c, false, 0, n, ldy);
      const auto ref = run(c, true, 0, n, ldy);
      for (size_t i = 0; i < fast.size(); ++i)
        ASSERT_EQ(bits_of(fast[i]), bits_of(ref[i])) << "n=" << n << " out=" << out << " i=" << i;
    }
}

TEST(AffineRows, RowGroupingAndThreadsDoNotChangeBits) {
  const Case c = make_case(300, 192, 192, 192, 7);
  set_num_threads(2);
  const auto all = run(c, false, 0, 300, 192);
  set_num_threads(1);
  for (int64_t split : {1, 5, 6, 97, 156}) {
    const auto a = run(c, false, 0, split, 192);
    const auto b = run(c, false, split, 300, 192);
    ASSERT_EQ(std::memcmp(a.data(), all.data(), a.size() * 4), 0) << split;
    ASSERT_EQ(std::memcmp(b.data(), all.data() + split * 192, b.size() * 4), 0) << split;
  }
  set_num_threads(0);
}

TEST(AffineRows, MatchesFloat64WithinRoundingBound) {
  const Case c = make_case(37, 40, 24, 29, 11);
  const auto y = run(c, false, 0, 37, 29);
  const int64_t K = 64;
  for (int64_t i = 0; i < 37; ++i)
    for (int64_t j = 0; j < 29; ++j) {
      double acc = c.b[size_t(j)], mag = std::abs(c.b[size_t(j)]);
      for (int64_t k = 0; k < K; ++k) {
        const double x = k < 40 ? c.x1[size_t(i * 43 + k)] : c.x2[size_t(i * 25 + k - 40)];
        acc += x * c.w[size_t(k * 29 + j)];
        mag += std::abs(x * c.w[size_t(k * 29 + j)]);
      }
      // Sequential FMA summation: |error| <= K * u * sum|terms| (u = 2^-24), plus final rounding.
      const double bound = (K + 1) * std::ldexp(1.0, -24) * mag;
      ASSERT_LE(std::abs(y[size_t(i * 29 + j)] - acc), bound) << i << "," << j;
    }
}

}  // namespace
}  // namespace aquakv
