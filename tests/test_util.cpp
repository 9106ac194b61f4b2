// Tests of util/: fp16/bf16 conversion against exact float64 math, and parallel_for coverage.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <future>
#include <memory>
#include <vector>
#include <thread>
#include <chrono>
#include <random>

#include "aquakv/util/fp16.h"
#include "aquakv/util/hash.h"
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

// FNV-1a 64 written out from the published constants, byte by byte.
uint64_t fnv_spec(const std::vector<uint8_t>& b) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t x : b) h = (h ^ x) * 0x100000001b3ull;
  return h;
}

TEST(Hash, ManyBuffersAtOnceGiveEachBuffersFnv1a) {
  // Known answers of FNV-1a 64 (the published test vectors for "" and "a").
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  std::mt19937 rng(3);
  for (const int count : {0, 1, 3, 4, 5, 9}) {
    std::vector<std::vector<uint8_t>> bufs(static_cast<size_t>(count));
    std::vector<const void*> ptr;
    std::vector<int64_t> len;
    for (auto& b : bufs) {
      b.resize(rng() % 300);
      for (auto& x : b) x = uint8_t(rng());
      ptr.push_back(b.data());
      len.push_back(int64_t(b.size()));
    }
    std::vector<uint64_t> out(static_cast<size_t>(count));
    fnv1a64_many(ptr.data(), len.data(), count, out.data());
    for (int i = 0; i < count; ++i) EXPECT_EQ(out[size_t(i)], fnv_spec(bufs[size_t(i)])) << count << " " << i;
  }
}

TEST(Bf16, RoundTrip) {
  EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.5f)), 1.5f);
  EXPECT_EQ(fp32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie -> even
  EXPECT_EQ(fp32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

TEST(Parallel, CoversEveryIndexOnce) {
  set_parallel_adaptive(false);  // reach the workers even on a busy machine
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
  set_parallel_adaptive(true);
}

// Many back-to-back regions of random sizes (the decode pattern: workers still spinning from
// the previous region claim chunks of the next), and regions after pauses longer than the spin
// time (workers asleep on the futex must be woken). Every index is covered exactly once when
// parallel_for returns, and the pool reports the regions it ran.
TEST(Parallel, BackToBackAndAfterSleepRegions) {
  set_parallel_adaptive(false);
  std::mt19937 rng(3);
  for (int threads : {2, 3}) {
    set_num_threads(threads);
    const PoolStats before = pool_stats();
    int64_t pooled = 0;
    for (int it = 0; it < 5000; ++it) {
      const int64_t n = 1 + int64_t(rng() % 300), grain = 1 + int64_t(rng() % 16);
      if (it % 1000 == 999) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      parallel_for(n, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) hits[size_t(i)]++;
      }, grain);
      pooled += n > grain;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "region " << it << " n " << n << " i " << i;
    }
    const PoolStats after = pool_stats();
    EXPECT_EQ(int64_t(after.regions - before.regions), pooled) << threads;
    EXPECT_EQ(after.inline_regions, before.inline_regions);
  }
  set_num_threads(0);
  set_parallel_adaptive(true);
}

// A region the pool runs inline because the cores look shared (the caller got almost no CPU
// over the last window: here it slept) may itself call parallel_for, as the AQUA-KV rebuild does
// inside attention: the nested call runs inline too. (It used to wait for the region lock its
// own caller held, forever.) Run on a thread with a deadline, so a regression fails, not hangs.
TEST(Parallel, NestedRegionsRunInlineWhenThePoolStepsAside) {
  set_parallel_adaptive(true);
  set_num_threads(2);
  auto done = std::make_shared<std::promise<int64_t>>();
  std::future<int64_t> result = done->get_future();
  std::thread([done] {
    std::atomic<int64_t> sum{0};
    parallel_for(8, [&](int64_t, int64_t) {}, 1);  // opens the contention window
    std::this_thread::sleep_for(std::chrono::milliseconds(60));  // ~0 CPU share: "shared"
    parallel_for(8, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i)
        parallel_for(4, [&](int64_t c, int64_t d) { sum += d - c; }, 1);
    }, 1);
    done->set_value(sum.load());
  }).detach();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "nested parallel_for deadlocked";
  EXPECT_EQ(result.get(), 32);
  EXPECT_GT(pool_stats().inline_regions, 0u);  // the inline path was the one taken
  set_num_threads(0);
}

}  // namespace
}  // namespace aquakv
