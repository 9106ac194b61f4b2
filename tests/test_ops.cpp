// Tests of ops/nn.h and ops/attention.h against float64 references; threaded == single-threaded.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "aquakv/ops/attention.h"
#include "aquakv/ops/nn.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

TEST(Attention, MatchesFloat64ReferenceAcrossShapes) {
  struct Case { int heads, kv, hd; int64_t n, p0; };
  for (const Case c : {Case{9, 3, 64, 1, 0}, Case{9, 3, 64, 1, 37}, Case{4, 4, 16, 3, 5},
                       Case{9, 3, 64, 4, 0}, Case{9, 3, 64, 5, 0}, Case{8, 2, 32, 33, 0},
                       Case{8, 2, 32, 70, 100}, Case{2, 1, 8, 65, 3}}) {
    const int64_t T = c.p0 + c.n, C = int64_t(c.kv) * c.hd, Q = int64_t(c.heads) * c.hd;
    const int64_t stride = C + 8;  // padded rows: the kernel must honour kv_stride
    auto q = randn(size_t(c.n * Q), 1), k = randn(size_t(T * stride), 2), v = randn(size_t(T * stride), 3);
    AttentionShape s{c.heads, c.kv, c.hd, float(1.0 / std::sqrt(double(c.hd)))};
    std::vector<float> ref(size_t(c.n * Q)), out(size_t(c.n * Q), NAN), out1(size_t(c.n * Q), NAN);
    attention_ref(s, q.data(), c.n, c.p0, k.data(), v.data(), stride, ref.data());
    set_num_threads(2);
    attention(s, q.data(), c.n, c.p0, k.data(), v.data(), stride, out.data());
    set_num_threads(1);
    attention(s, q.data(), c.n, c.p0, k.data(), v.data(), stride, out1.data());
    set_num_threads(2);
    // Outputs are convex combinations of N(0,1) values: f32 error ~1e-6 * sqrt(T).
    EXPECT_LT(max_diff(out, ref), 1e-4) << c.n << " " << c.p0;
    EXPECT_EQ(max_diff(out, out1), 0.0) << c.n << " " << c.p0;
  }
}

}  // namespace
}  // namespace aquakv
