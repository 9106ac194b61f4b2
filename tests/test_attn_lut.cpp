// Key scores by per-query byte tables (ops/attn_lut.h): every SIMD level bit-identical to the
// scalar reference, and the reference against float64 scores of the grid points the codes name
// (computed here from the points, independent of the tables), within the bound stated in the
// header: f (P delta / 2) + f 3 2^-24 (delta U + |B|).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "aquakv/ops/attn_lut.h"
#include "aquakv/quant/grid.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "random_rows.h"

namespace aquakv {
namespace {

using testing::randn;

// t key rows as a cache stores them: `lead` bytes, then the fp16 scale, then P/2 code bytes, then
// `tail` bytes (other heads' scales and codes), so strides and offsets are not multiples of 16.
struct Keys {
  std::vector<uint8_t> bytes;
  int64_t rs, scale0, code0;
};
Keys make_keys(int64_t t, int64_t P, uint32_t seed) {
  Keys k;
  k.scale0 = 3;
  k.code0 = 7;
  k.rs = k.code0 + P / 2 + 5;
  k.bytes.resize(size_t(t * k.rs));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::lognormal_distribution<float> scale(0.0f, 1.0f);
  for (auto& b : k.bytes) b = uint8_t(byte(rng));
  for (int64_t j = 0; j < t; ++j) {
    const uint16_t h = fp32_to_fp16(j % 11 == 5 ? 0.0f : scale(rng));  // some zero scales
    std::memcpy(k.bytes.data() + j * k.rs + k.scale0, &h, 2);
  }
  return k;
}

TEST(AttnLut, EveryLevelMatchesTheReferenceBitForBit) {
  const SimdLevel saved = simd_level();
  const auto pts = randn(32, 3);
  for (const int64_t P : {4, 32, 64, 96, 128, 256})
    for (const int64_t t : {1, 15, 16, 37, 128})
      for (const int64_t M : {1, 3, 5}) {
        const Keys k = make_keys(t, P, uint32_t(P + t));
        const auto q = randn(size_t(M * 2 * P), uint32_t(M));
        std::vector<uint8_t> tab(size_t(M * attn_lut_row_bytes(P)));
        std::vector<float> delta(static_cast<size_t>(M)), bias(static_cast<size_t>(M)), sref(size_t(M * t));
        attn_lut_build(q.data(), M, P, pts.data(), tab.data(), delta.data(), bias.data());
        const float mult = 0.125f;
        attn_scores_lut_ref(tab.data(), delta.data(), bias.data(), M, P, k.bytes.data() + k.code0,
                            k.bytes.data() + k.scale0, t, k.rs, mult, sref.data(), t);
        for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
          set_simd_level(SimdLevel(lv));
          std::vector<float> s(sref.size(), -1.0f);
          attn_scores_lut(tab.data(), delta.data(), bias.data(), M, P, k.bytes.data() + k.code0,
                          k.bytes.data() + k.scale0, t, k.rs, mult, s.data(), t);
          for (size_t i = 0; i < s.size(); ++i)
            ASSERT_EQ(s[i], sref[i]) << simd_level_name(SimdLevel(lv)) << " P " << P << " t " << t << " M " << M
                                     << " i " << i;
        }
        set_simd_level(saved);
      }
  set_simd_level(saved);
}

// Against float64 on the grid points themselves: score = f sum_p q_p . g[c_p]. The bound is the
// header's; the test also requires it to be close to used (the largest error over many rows is
// more than 5% of the table-rounding term: tables that were not rounded at all, or rounded to
// coarser steps than stated, would show as too small or too large an error).
TEST(AttnLut, ScoresWithinTheStatedBound) {
  const Grid& grid = builtin_grid(2, 16);
  for (const int64_t P : {32, 96, 128}) {
    const int64_t t = 400, M = 4;
    const Keys k = make_keys(t, P, 11);
    const auto q = randn(size_t(M * 2 * P), 12, 0.3f);
    std::vector<uint8_t> tab(size_t(M * attn_lut_row_bytes(P)));
    std::vector<float> delta(static_cast<size_t>(M)), bias(static_cast<size_t>(M)), s(size_t(M * t));
    attn_lut_build(q.data(), M, P, grid.points.data(), tab.data(), delta.data(), bias.data());
    const float mult = float(1.0 / std::sqrt(double(2 * P)));
    attn_scores_lut(tab.data(), delta.data(), bias.data(), M, P, k.bytes.data() + k.code0, k.bytes.data() + k.scale0,
                    t, k.rs, mult, s.data(), t);
    double used = 0;
    for (int64_t r = 0; r < M; ++r) {
      // delta from the definition (widest pair range / 255), in float64.
      double range = 0, absmax = 0;
      for (int64_t p = 0; p < P; ++p) {
        double lo = INFINITY, hi = -INFINITY;
        for (int c = 0; c < 16; ++c) {
          const double v = double(q[size_t(r * 2 * P + 2 * p)]) * grid.points[size_t(2 * c)] +
                           double(q[size_t(r * 2 * P + 2 * p + 1)]) * grid.points[size_t(2 * c + 1)];
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        range = std::max(range, hi - lo);
        absmax += std::max(std::fabs(lo), std::fabs(hi));
      }
      EXPECT_NEAR(delta[size_t(r)], range / 255.0, 1e-7 * range);
      for (int64_t j = 0; j < t; ++j) {
        const uint8_t* row = k.bytes.data() + j * k.rs;
        uint16_t h;
        std::memcpy(&h, row + k.scale0, 2);
        const double f = double(fp16_to_fp32(h) * mult);
        double exact = 0;
        for (int64_t p = 0; p < P; ++p) {
          const int c = p % 2 == 0 ? row[k.code0 + p / 2] & 15 : row[k.code0 + p / 2] >> 4;
          exact += double(q[size_t(r * 2 * P + 2 * p)]) * grid.points[size_t(2 * c)] +
                   double(q[size_t(r * 2 * P + 2 * p + 1)]) * grid.points[size_t(2 * c + 1)];
        }
        exact *= f;
        const double table_term = f * double(P) * delta[size_t(r)] / 2;
        // delta U + |B| <= 3 sum_p max_k |L[p][k]| (U delta spans the ranges, B the minima).
        const double bound = table_term + f * 3 * std::ldexp(1.0, -24) * 3 * absmax + 1e-30;
        const double err = std::fabs(double(s[size_t(r * t + j)]) - exact);
        ASSERT_LE(err, bound) << "P " << P << " r " << r << " j " << j;
        if (table_term > 0) used = std::max(used, err / table_term);
      }
    }
    std::printf("P %3ld: largest error %.1f%% of the table-rounding bound\n", long(P), 100 * used);
    EXPECT_GT(used, 0.05) << P;
  }
}

TEST(AttnLut, ZeroQueryGivesZeroScores) {
  const int64_t P = 32, t = 16;
  const Keys k = make_keys(t, P, 5);
  const auto pts = randn(32, 6);
  std::vector<float> q(size_t(2 * P), 0.0f), s(size_t(t), 1.0f), delta(1), bias(1);
  std::vector<uint8_t> tab(size_t(attn_lut_row_bytes(P)));
  attn_lut_build(q.data(), 1, P, pts.data(), tab.data(), delta.data(), bias.data());
  EXPECT_EQ(delta[0], 1.0f);
  EXPECT_EQ(bias[0], 0.0f);
  attn_scores_lut(tab.data(), delta.data(), bias.data(), 1, P, k.bytes.data() + k.code0, k.bytes.data() + k.scale0, t,
                  k.rs, 1.0f, s.data(), t);
  for (float x : s) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace aquakv
