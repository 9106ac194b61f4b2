// Tests of ThinK key-channel pruning (kv/think_cache.h): after every step, the stored keys equal
// a brute-force replay of the rule (channel scores in double from the queries and keys given
// here, full sort per head), i.e. kept channels hold the fp16 key and dropped ones zero;
// attention equals a float64 softmax over those keys; the bytes equal the formula; bad specs
// are refused with one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/think_cache.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

#include "kv_spec_checks.h"

namespace aquakv {
namespace {

constexpr int kL = 2, kH = 2, kHd = 8, kC = kH * kHd, kQH = 4;  // 2 query heads per KV head

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 1024;
  return s;  // no RoPE: stored keys are the given keys
}

float h(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

// Channel scales differ per head so the scores separate.
std::vector<float> rows(int64_t n, int width, std::mt19937& rng) {
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(size_t(n * width));
  for (int64_t r = 0; r < n; ++r)
    for (int c = 0; c < width; ++c) x[size_t(r * width + c)] = g(rng) * (0.3f + 0.2f * float((c * 7) % 11));
  return x;
}

TEST(Think, PrunedKeysEqualBruteForceRuleAndAttentionIsExact) {
  ThinkOptions o;
  o.prune = 0.375;  // 3 of 8 channels dropped per head
  o.sinks = 2;
  o.buffer = 16;
  auto cache = make_think_cache(shape(), o);
  const int kept = think_kept_channels(o, kHd);
  ASSERT_EQ(kept, 5);
  const int seq = cache->add_sequence();
  std::mt19937 rng(7);
  // The reference: every row's expected stored key per layer, the window sums since the last
  // chunk, the buffered rows.
  std::vector<std::vector<float>> want(kL);  // (rows, C) per layer
  std::vector<std::vector<double>> qsq(kL, std::vector<double>(kC, 0.0));
  int64_t T = 0, n_sinks = 0, n_buf = 0;
  int chunks = 0, step = 0;
  for (int64_t n : {3, 5, 1, 9, 2, 7, 1, 1, 20, 4, 1, 1, 1, 30, 6}) {
    ++step;
    cache->begin_step(seq, n);
    std::vector<float> out(size_t(n * kQH * kHd));
    for (int l = 0; l < kL; ++l) {
      const auto k = rows(n, kC, rng), v = rows(n, kC, rng);
      // Queries favour other channels from step to step, so the window matters.
      auto q = rows(n, kQH * kHd, rng);
      for (int64_t i = 0; i < n; ++i)
        for (int c = 0; c < kQH * kHd; ++c) q[size_t(i * kQH * kHd + c)] *= 0.1f + float((c * 5 + step * 3) % 9);
      cache->append(l, k.data(), v.data());
      for (int64_t r = 0; r < n; ++r)
        for (int c = 0; c < kC; ++c) want[size_t(l)].push_back(h(k[size_t(r * kC + c)]));
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.4f;
      cache->attend(l, a);
      for (int64_t i = 0; i < n; ++i)
        for (int qh = 0; qh < kQH; ++qh)
          for (int c = 0; c < kHd; ++c) qsq[size_t(l)][size_t((qh / 2) * kHd + c)] += double(q[size_t((i * kQH + qh) * kHd + c)]) * q[size_t((i * kQH + qh) * kHd + c)];
      // The last query (position T + n - 1) against every row held, in float64.
      const KvView view = cache->read(l);
      const int64_t R = T + n;
      ASSERT_EQ(view.n_tokens, R);
      for (int qh = 0; qh < kQH; ++qh) {
        const float* qq = q.data() + ((n - 1) * kQH + qh) * kHd;
        const int kh = qh / 2;
        std::vector<double> s(static_cast<size_t>(R));
        double m = -1e300, z = 0;
        for (int64_t r = 0; r < R; ++r) {
          double d = 0;
          for (int c = 0; c < kHd; ++c) d += double(qq[c]) * want[size_t(l)][size_t(r * kC + kh * kHd + c)];
          m = std::max(m, s[size_t(r)] = d * a.scale);
        }
        for (auto& e : s) z += (e = std::exp(e - m));
        const float* vv = static_cast<const float*>(view.v);
        for (int c = 0; c < kHd; ++c) {
          double acc = 0;
          for (int64_t r = 0; r < R; ++r) acc += s[size_t(r)] / z * vv[r * kC + kh * kHd + c];
          ASSERT_NEAR(out[size_t(((n - 1) * kQH + qh) * kHd + c)], acc, 2e-4) << "layer " << l;
        }
      }
    }
    cache->end_step();
    // The rule: sinks first; a full buffer becomes a chunk with channels chosen per head.
    const int64_t to_sinks = std::clamp<int64_t>(o.sinks - T, 0, n);
    n_sinks += to_sinks;
    n_buf += n - to_sinks;
    T += n;
    if (n_buf >= o.buffer) {
      const int64_t r0 = n_sinks + (T - n_sinks - n_buf);
      for (int l = 0; l < kL; ++l) {
        for (int kh = 0; kh < kH; ++kh) {
          std::vector<double> score(kHd);
          for (int c = 0; c < kHd; ++c) {
            double ks = 0;
            for (int64_t r = r0; r < r0 + n_buf; ++r) ks += std::pow(double(want[size_t(l)][size_t(r * kC + kh * kHd + c)]), 2);
            score[size_t(c)] = std::sqrt(qsq[size_t(l)][size_t(kh * kHd + c)]) * std::sqrt(ks);
          }
          std::vector<int> order(kHd);
          std::iota(order.begin(), order.end(), 0);
          std::sort(order.begin(), order.end(), [&](int a, int b) { return score[size_t(a)] != score[size_t(b)] ? score[size_t(a)] > score[size_t(b)] : a < b; });
          for (int j = kept; j < kHd; ++j)
            for (int64_t r = r0; r < r0 + n_buf; ++r) want[size_t(l)][size_t(r * kC + kh * kHd + order[size_t(j)])] = 0.0f;
        }
        std::fill(qsq[size_t(l)].begin(), qsq[size_t(l)].end(), 0.0);
      }
      n_buf = 0;
      ++chunks;
    }
    cache->begin_step(seq, 0);
    for (int l = 0; l < kL; ++l) {
      const KvView view = cache->read(l);
      ASSERT_EQ(view.n_tokens, T);
      ASSERT_EQ(0, std::memcmp(view.k, want[size_t(l)].data(), size_t(T * kC * 4))) << "after " << T << " tokens, layer " << l;
    }
    cache->end_step();
    // Bytes: fp16 kept key channels and values per coded row, one byte per kept channel and
    // head per chunk, fp16 rows exact, the window sums.
    const int64_t coded = T - n_sinks - n_buf;
    const int64_t bytes = kL * (coded * (2 * kH * kept + 2 * kC) + chunks * kH * kept + (n_sinks + n_buf) * 4 * kC + 4 * kC);
    EXPECT_EQ(cache->live_bytes(), bytes);
    double bits = 0;
    for (const auto& t : cache->bits_report(seq)) bits += t.bits_per_value;
    EXPECT_NEAR(bits, 8.0 * double(bytes) / double(T * kL * 2 * kC), 1e-9);
  }
  EXPECT_GE(chunks, 3) << "too few chunks to test the rule";
}

TEST(Think, SpecsAndRefusals) {
  KvShape s = shape();
  s.head_dim = 64;
  s.n_kv_heads = 3;
  EXPECT_EQ(make_cache("think:0.5", s)->name(), "think:0.5,p=4,b=128,k=fp16,v=fp16");
  EXPECT_EQ(make_cache("think:0.5,k=higgs2,v=higgs2", s)->name(), "think:0.5,p=4,b=128,k=higgs:2x16:g96,v=higgs:2x16:g192");
  expect_specs_refused({"think", "think:", "think:1", "think:1.5", "think:-0.1", "think:x", "think:0.5,b=0",
                          "think:0.5,q=1", "think:0.5,p", "think:0.5,k=nosuch", "think:0.4,k=higgs2", "think:0.999"}, s);
}

}  // namespace
}  // namespace aquakv
