// Tests of MiniCache (kv/minicache.h): after every step each layer's rows equal a float64
// replay of the merge written here (SLERP of the pair's unit vectors per head, magnitudes per
// layer, the most distant rows of a chunk kept whole), up to the fp16 storage of directions and
// magnitudes; attention on the stored form equals the float64 reference path on the same rows;
// live bytes equal the formula; bad specs are refused with one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/minicache.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

#include "kv_spec_checks.h"

namespace aquakv {
namespace {

constexpr int kL = 5, kH = 2, kHd = 8, kC = kH * kHd, kQH = 4;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 1024;
  s.rope.n_rot = kHd;  // RoPE on: the cache stores keys before it and rotates when it attends
  return s;
}

float h(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

// SLERP of rows p and q of one head (float64), as kv/minicache.h states it.
void slerp(const float* p, const float* q, double t, double* e, double* np, double* nq, double* dist) {
  double a = 0, b = 0, d = 0;
  for (int i = 0; i < kHd; ++i) a += double(p[i]) * p[i], b += double(q[i]) * q[i], d += double(p[i]) * q[i];
  *np = std::sqrt(a);
  *nq = std::sqrt(b);
  const double O = std::acos(std::clamp(d / (*np * *nq), -1.0, 1.0));
  *dist = O / M_PI;
  const double wa = std::sin((1 - t) * O) / std::sin(O), wb = std::sin(t * O) / std::sin(O);
  double n = 0;
  for (int i = 0; i < kHd; ++i) n += std::pow(e[i] = wa * p[i] / *np + wb * q[i] / *nq, 2);
  for (int i = 0; i < kHd; ++i) e[i] /= std::sqrt(n);
}

TEST(MiniCache, RowsEqualTheMergeReplayedAndAttentionIsExact) {
  MiniCacheOptions o;
  o.start = 2;  // layers 0, 1 whole; pair (2, 3); layer 4 alone
  o.t = 0.6;
  o.keep = 0.25;
  o.sinks = 2;
  o.buffer = 8;
  auto cache = make_minicache(shape(), o);
  const int seq = cache->add_sequence();
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 1);
  std::vector<std::vector<float>> kin(kL), vin(kL);  // fp16-rounded inputs per layer
  int64_t T = 0, n_sinks = 0, n_buf = 0;
  std::vector<std::vector<float>> want_k(kL), want_v(kL);  // expected rows so far
  int64_t merged_rows = 0, kept_rows = 0;
  for (int64_t n : {3, 4, 1, 9, 2, 1, 1, 12, 5, 3}) {
    cache->begin_step(seq, n);
    std::vector<float> k(size_t(n * kC)), v(size_t(n * kC)), q(size_t(n * kQH * kHd)), out(q.size()), ref(q.size());
    std::vector<float> prevk, prevv;
    for (int l = 0; l < kL; ++l) {
      // Layer 3 close to layer 2 (mergeable), a few rows far from it.
      for (int64_t r = 0; r < n; ++r)
        for (int c = 0; c < kC; ++c) {
          const bool near = l == 3 && (T + r) % 5 != 0;
          k[size_t(r * kC + c)] = near ? 1.5f * prevk[size_t(r * kC + c)] + 0.2f * g(rng) : g(rng);
          v[size_t(r * kC + c)] = near ? 0.7f * prevv[size_t(r * kC + c)] + 0.2f * g(rng) : g(rng);
        }
      prevk = k;
      prevv = v;
      for (auto& e : q) e = g(rng);
      cache->append(l, k.data(), v.data());
      for (float e : k) kin[size_t(l)].push_back(h(e)), want_k[size_t(l)].push_back(h(e));
      for (float e : v) vin[size_t(l)].push_back(h(e)), want_v[size_t(l)].push_back(h(e));
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.4f;
      cache->attend(l, a);
      // The reference path of the same cache (float64, its read()) on the same rows.
      struct Obs final : KvAttentionObserver {
        void on_weights(int, int64_t, int64_t, int, std::span<const int32_t>, std::span<const float>) override {}
      } obs;
      a.out = ref.data();
      a.observer = &obs;
      cache->attend(l, a);
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-4) << "layer " << l;
    }
    cache->end_step();
    const int64_t to_sinks = std::clamp<int64_t>(o.sinks - T, 0, n);
    n_sinks += to_sinks;
    n_buf += n - to_sinks;
    T += n;
    if (n_buf >= o.buffer) {  // the buffer becomes a chunk; pair (2, 3) merges
      const int64_t r0 = T - n_buf;
      std::vector<double> dist(size_t(n_buf), 0.0);
      for (int st = 0; st < 2; ++st) {
        auto& in = st == 0 ? kin : vin;
        auto& want = st == 0 ? want_k : want_v;
        for (int64_t r = 0; r < n_buf; ++r)
          for (int hh = 0; hh < kH; ++hh) {
            double e[kHd], np, nq, d;
            const size_t off = size_t((r0 + r) * kC + hh * kHd);
            slerp(&in[2][off], &in[3][off], o.t, e, &np, &nq, &d);
            dist[size_t(r)] += d / (2 * kH);
            for (int i = 0; i < kHd; ++i) {
              want[2][off + size_t(i)] = float(h(float(np)) * double(h(float(e[i]))));
              want[3][off + size_t(i)] = float(h(float(nq)) * double(h(float(e[i]))));
            }
          }
      }
      const int64_t nk = int64_t(std::ceil(o.keep * double(n_buf) - 1e-9));
      std::vector<int64_t> ord(static_cast<size_t>(n_buf));
      std::iota(ord.begin(), ord.end(), 0);
      std::stable_sort(ord.begin(), ord.end(), [&](int64_t i, int64_t j) { return dist[size_t(i)] > dist[size_t(j)]; });
      for (int64_t i = 0; i < nk; ++i)
        for (int w = 2; w <= 3; ++w)
          for (int c = 0; c < kC; ++c) {
            const size_t off = size_t((r0 + ord[size_t(i)]) * kC + c);
            want_k[size_t(w)][off] = kin[size_t(w)][off];
            want_v[size_t(w)][off] = vin[size_t(w)][off];
          }
      merged_rows += n_buf - nk;
      kept_rows += nk;
      n_buf = 0;
    }
    cache->begin_step(seq, 0);
    for (int l = 0; l < kL; ++l) {
      const KvView view = cache->read(l);
      ASSERT_EQ(view.n_tokens, T);
      const float* gk = static_cast<const float*>(view.k);
      const float* gv = static_cast<const float*>(view.v);
      for (int64_t i = 0; i < T * kC; ++i) {
        ASSERT_NEAR(gk[i], want_k[size_t(l)][size_t(i)], 1e-5 * (1 + std::abs(want_k[size_t(l)][size_t(i)]))) << "layer " << l << " value " << i;
        ASSERT_NEAR(gv[i], want_v[size_t(l)][size_t(i)], 1e-5 * (1 + std::abs(want_v[size_t(l)][size_t(i)]))) << "layer " << l << " value " << i;
      }
    }
    cache->end_step();
    // Bytes: layers 0, 1, 4 whole (fp16); the pair: per chunk row a direction and two
    // magnitudes per head for K and V, an int32 index, and both layers' rows for kept rows.
    const int64_t coded = T - n_sinks - n_buf;
    const int64_t bytes = (n_sinks + n_buf) * kL * 4 * kC + coded * 3 * 4 * kC +
                          coded * (2 * (2 * kC + 2 * 2 * kH) + 4) + kept_rows * 2 * 2 * 2 * kC;
    ASSERT_EQ(cache->live_bytes(), bytes);
  }
  EXPECT_GT(merged_rows, 10);
  EXPECT_GT(kept_rows, 2);
}

TEST(MiniCache, SpecsAndRefusals) {
  EXPECT_EQ(make_cache("minicache", shape())->name(), "minicache:2,t=0.6,keep=0.05,p=4,b=128");
  EXPECT_EQ(make_cache("minicache:3,keep=0.1", shape())->name(), "minicache:3,t=0.6,keep=0.1,p=4,b=128");
  expect_specs_refused({"minicache:9", "minicache:x", "minicache:2,t=1", "minicache:2,t=0", "minicache:2,keep=2",
                          "minicache:2,keep=nan", "minicache:2,b=0", "minicache:2,q=1", "minicache:2,t", "minicache:-1"}, shape());
}

}  // namespace
}  // namespace aquakv
