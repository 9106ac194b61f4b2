// Tests of ops/nn.h against float64 references; threaded == single-threaded. (Attention is
// tested in test_kv_attend.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "aquakv/ops/nn.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"
#include "random_rows.h"

namespace aquakv {
namespace {

using testing::randn;

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace
}  // namespace aquakv

namespace aquakv {
namespace {

TEST(Rope, TableMatchesDirectAnglesBothTypesAndFactors) {
  for (RopeType type : {RopeType::kNormal, RopeType::kNeox}) {
    RopeParams p;
    p.type = type;
    p.n_rot = 48;  // partial rotation: the last 16 of 64 values stay put
    p.freq_base = 100000.0;
    p.freq_scale = 0.5;
    for (int i = 0; i < 24; ++i) p.freq_factors.push_back(1.0f + 0.25f * float(i % 3));
    RopeTable table(p);
    table.ensure(3000);
    for (int64_t pos : {0, 1, 17, 2999}) {
      auto a = randn(3 * 64, uint32_t(pos) + 9), b = a;
      rope_row(table, a.data(), 3, 64, pos);
      rope_row_ref(p, b.data(), 3, 64, pos);
      EXPECT_LT(max_diff(a, b), 2e-5) << pos;
      for (int h = 0; h < 3; ++h) {
        for (int j = 48; j < 64; ++j) EXPECT_EQ(a[size_t(h * 64 + j)], b[size_t(h * 64 + j)]);
      }
    }
  }
}

TEST(Rope, SimdLevelsRotateIdentically) {
  // Full rotation of heads of 64 and 128 (the widths the AVX2 and AVX-512 kernels take): every
  // level within rounding of the float64 reference, and the vector levels equal to each other
  // (same operations per element).
  const SimdLevel saved = simd_level();
  for (RopeType type : {RopeType::kNormal, RopeType::kNeox}) {
    for (int hd : {64, 128}) {
      RopeParams p;
      p.type = type;
      p.n_rot = hd;
      p.freq_base = 10000.0;
      RopeTable table(p);
      table.ensure(5000);
      for (int64_t pos : {0, 3, 4095}) {
        const auto x = randn(size_t(2 * hd), uint32_t(pos) + 3);
        auto want = x;
        rope_row_ref(p, want.data(), 2, hd, pos);
        std::vector<float> avx2;
        for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
          set_simd_level(SimdLevel(lv));
          auto got = x;
          rope_row(table, got.data(), 2, hd, pos);
          EXPECT_LT(max_diff(got, want), 2e-5) << "level " << lv << " pos " << pos;
          if (lv == 1) avx2 = got;
          if (lv == 2) {
            EXPECT_EQ(got, avx2) << "pos " << pos;
          }
        }
      }
    }
  }
  set_simd_level(saved);
}

TEST(Rope, PairConventions) {
  // One pair rotated by 90 degrees: theta_0(pos) = pos, so pos = pi/2 is not integral; use the
  // table at pos 1 with base chosen so theta_0 = 1 and check against cos(1), sin(1).
  for (RopeType type : {RopeType::kNormal, RopeType::kNeox}) {
    RopeParams p;
    p.type = type;
    p.n_rot = 4;
    std::vector<float> x = {1, 2, 3, 4};
    rope_row_ref(p, x.data(), 1, 4, 1);
    const int a = 0, b = type == RopeType::kNormal ? 1 : 2;  // the pair of value 0
    const float x0 = type == RopeType::kNormal ? 1 : 1, x1 = type == RopeType::kNormal ? 2 : 3;
    EXPECT_NEAR(x[size_t(a)], x0 * std::cos(1.0) - x1 * std::sin(1.0), 1e-6);
    EXPECT_NEAR(x[size_t(b)], x0 * std::sin(1.0) + x1 * std::cos(1.0), 1e-6);
  }
}

TEST(Nn, SoftmaxSimdMatchesReference) {
  for (int64_t n : {1, 7, 8, 9, 64, 1000, 2061}) {
    auto x = randn(size_t(n), uint32_t(n), 6.0f);
    x[0] = 80.0f;  // a dominant logit drives the others towards underflow
    auto a = x, b = x;
    softmax_ref(a.data(), n);
    set_simd_level(SimdLevel::kAvx2);
    softmax(b.data(), n);
    set_simd_level(cpu_simd_level());
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      s += b[size_t(i)];
      ASSERT_NEAR(b[size_t(i)], a[size_t(i)], 2e-6 * a[size_t(i)] + 1e-30) << n << " " << i;
    }
    EXPECT_NEAR(s, 1.0, 1e-5);
  }
}

TEST(Nn, RmsNormSoftmaxSwiglu) {
  const std::vector<float> x = {1, -2, 3, -4}, w = {1, 1, 2, 0.5f};
  std::vector<float> y(4);
  rms_norm(x.data(), w.data(), y.data(), 4, 0.0f);
  const double r = std::sqrt((1 + 4 + 9 + 16) / 4.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[size_t(i)], x[size_t(i)] / r * w[size_t(i)], 1e-6);
  std::vector<float> s = {1, 2, 3};
  softmax(s.data(), 3);
  const double z = std::exp(1) + std::exp(2) + std::exp(3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(s[size_t(i)], std::exp(i + 1) / z, 1e-6);
  std::vector<float> g = {0.5f, -1.0f}, u = {2, 3}, h(2);
  swiglu(g.data(), u.data(), h.data(), 2);
  EXPECT_NEAR(h[0], 0.5 / (1 + std::exp(-0.5)) * 2, 1e-6);
  EXPECT_NEAR(h[1], -1.0 / (1 + std::exp(1.0)) * 3, 1e-6);
}

// geglu at every SIMD level and geglu_ref against the same tanh form in float64. The SIMD form
// (z * sigmoid(2y)) keeps relative precision: |h - exact| <= (2e-6 + 4e-7 |2y|) |exact| (the
// bound derived in src/ops/nn_avx2.cpp, with margin); the reference's 1 + tanh(y) cancels for
// negative z, so it is held to an absolute bound of a few f32 roundings of |z u|. Below t = -87
// the SIMD form returns 0 (absolute error < 2e-38 |z u|).
TEST(Nn, GegluLevelsMatchFloat64) {
  std::vector<float> g, u;
  for (int i = -4000; i <= 4000; ++i) g.push_back(0.005f * float(i));  // [-20, 20]
  for (float z : {-1e4f, -90.0f, -45.0f, 45.0f, 1e4f, 0.0f, -0.0f, 1e-30f}) g.push_back(z);
  auto rnd = randn(1003, 7, 3.0f);
  g.insert(g.end(), rnd.begin(), rnd.end());
  for (size_t i = 0; i < g.size(); ++i) u.push_back(0.5f + 0.001f * float(i % 997));
  const int64_t n = int64_t(g.size());  // not a multiple of 8: the tail is checked too
  const auto exact = [&](size_t i, double& t) {
    const double z = g[i];
    const double y = 0.7978845608028654 * (z + 0.044715 * z * z * z);
    t = 2 * y;
    return z / (1 + std::exp(-t)) * u[i];  // = z/2 (1 + tanh(y)), without the cancellation
  };
  std::vector<float> h(g.size());
  geglu_ref(g.data(), u.data(), h.data(), n);
  for (size_t i = 0; i < g.size(); ++i) {
    double t;
    const double e = exact(i, t);
    ASSERT_NEAR(h[i], e, 1e-6 * std::abs(e) + 4e-7 * std::abs(double(g[i]) * u[i]) + 1e-37) << "ref z = " << g[i];
  }
  for (SimdLevel lvl : {SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (cpu_simd_level() < lvl) continue;
    set_simd_level(lvl);
    std::vector<float> hs(g.size());
    geglu(g.data(), u.data(), hs.data(), n);
    for (size_t i = 0; i < g.size(); ++i) {
      double t;
      const double e = exact(i, t);
      ASSERT_NEAR(hs[i], e, (2e-6 + 4e-7 * std::abs(t)) * std::abs(e) + 2e-38 * std::abs(double(g[i]) * u[i]) + 1e-44) << simd_level_name(lvl) << " z = " << g[i];
    }
    std::vector<float> alias = g;  // h may alias g
    geglu(alias.data(), u.data(), alias.data(), n);
    ASSERT_EQ(alias, hs);
  }
  set_simd_level(cpu_simd_level());
}

// GeGLU's tanh-approximated GELU against the exact erf form: the approximation is within 1e-3
// of x * Phi(x) everywhere (its largest gap is about 4.7e-4 near |x| = 2); at 1 it is 0.841192.
TEST(Nn, GegluAndSoftcap) {
  std::vector<float> g, u;
  for (int i = -60; i <= 60; ++i) {
    g.push_back(0.1f * float(i));
    u.push_back(1.0f + 0.01f * float(i));
  }
  std::vector<float> h(g.size());
  geglu(g.data(), u.data(), h.data(), int64_t(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const double x = g[i], exact = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    EXPECT_NEAR(h[i], exact * u[i], 1e-3 * std::abs(u[i])) << "x = " << x;
  }
  EXPECT_NEAR(h[70], 0.841192 * u[70], 1e-5);  // x = 1
  std::vector<float> c = {0.0f, 1.0f, -100.0f, 1e6f};
  softcap(c.data(), 4, 30.0f);
  EXPECT_FLOAT_EQ(c[0], 0.0f);
  EXPECT_NEAR(c[1], 30.0 * std::tanh(1.0 / 30.0), 1e-6);
  EXPECT_NEAR(c[2], -30.0 * std::tanh(100.0 / 30.0), 1e-5);
  EXPECT_FLOAT_EQ(c[3], 30.0f);
}

}  // namespace
}  // namespace aquakv
