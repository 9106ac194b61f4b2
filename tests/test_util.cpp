// Tests of util/: fp16/bf16 conversion against exact float64 math, and parallel_for coverage.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// Independent half decoder from the format definition, in double.
double half_value(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

TEST(Fp16, DecodesEveryFiniteHalfExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31) continue;
    ASSERT_EQ(double(fp16_to_fp32(uint16_t(h))), half_value(uint16_t(h))) << h;
  }
}

TEST(Fp16, EncodeIsNearestEven) {
  // Every finite half round-trips; midpoints between neighbours round to the even mantissa.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float f = fp16_to_fp32(uint16_t(h));
    ASSERT_EQ(fp32_to_fp16(f), h);
    ASSERT_EQ(fp32_to_fp16(-f), h | 0x8000u);
    if (h + 1 < 0x7c00) {
      const double mid = (half_value(uint16_t(h)) + half_value(uint16_t(h + 1))) / 2;
      const uint16_t want = (h & 1) ? uint16_t(h + 1) : uint16_t(h);
      ASSERT_EQ(fp32_to_fp16(float(mid)), want) << h;
    }
  }
  EXPECT_EQ(fp32_to_fp16(1e6f), 0x7c00);
  EXPECT_EQ(fp32_to_fp16(65519.f), 0x7bff);
  EXPECT_EQ(fp32_to_fp16(65520.f), 0x7c00);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(NAN))));
}

TEST(Bf16, RoundTrip) {
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(fp32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

TEST(Parallel, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 7, 64, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      parallel_for(n, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) hits[i]++;
      }, 4);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << i;
    }
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace aquakv
