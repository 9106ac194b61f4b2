// Tests of L2-norm eviction (kv/eviction.h) and of KvCache::drop_rows in the formats it wraps:
// the rows held after every step equal a brute-force replay of the rule (full sort of every
// candidate, scores in double computed here), attention over them equals a float64 softmax over
// exactly those rows, rows of the compressed cache (AQUA-KV chain with predictors) that survive
// a drop are bit for bit those of a cache that never dropped, and bad specs are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/eviction.h"
#include "aquakv/util/error.h"

#include "kv_spec_checks.h"
#include "test_codecs.h"

namespace aquakv {
namespace {

constexpr int kL = 3, kH = 2, kHd = 8, kC = kH * kHd;

KvShape shape(int64_t max_tokens = 1024) {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = max_tokens;
  return s;
}

// Token t, layer l: K and V rows; every token's keys get their own scale so norms differ.
struct Tokens {
  std::vector<float> x;  // [t][l][k|v][C]
  const float* at(int64_t t, int l, int which) const { return x.data() + ((t * kL + l) * 2 + which) * kC; }
};
Tokens make_tokens(int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  std::uniform_real_distribution<float> u(0.2f, 3.0f);
  Tokens tk;
  tk.x.resize(size_t(T * kL * 2 * kC));
  for (int64_t t = 0; t < T; ++t)
    for (int l = 0; l < kL; ++l) {
      const float s = u(rng);
      float* k = tk.x.data() + ((t * kL + l) * 2) * kC;
      for (int c = 0; c < kC; ++c) k[c] = s * g(rng);
      for (int c = 0; c < kC; ++c) k[kC + c] = g(rng);
    }
  return tk;
}

// The rule of kv/eviction.h replayed by brute force: a map position -> score of the rows held.
struct Reference {
  L2EvictOptions o;
  std::map<int32_t, double> held;
  int64_t T = 0;
  void step(const Tokens& tk, int64_t n) {
    for (int64_t t = T; t < T + n; ++t) {
      double s = 0;
      for (int l = 0; l < kL; ++l) {
        double n2 = 0;
        for (int c = 0; c < kC; ++c) n2 += double(tk.at(t, l, 0)[c]) * double(tk.at(t, l, 0)[c]);
        s += std::log(std::sqrt(n2));
      }
      held[int32_t(t)] = s;
    }
    T += n;
    const int64_t target = int64_t(std::ceil(o.keep * double(T)));
    if (int64_t(held.size()) - target <= o.slack) return;
    std::vector<std::pair<double, int32_t>> cand;  // (-score, pos): ascending = drop order
    for (const auto& [p, s] : held)
      if (p >= o.sinks && p < T - o.recent) cand.push_back({-s, p});
    std::sort(cand.begin(), cand.end());
    const int64_t n_drop = std::min<int64_t>(int64_t(held.size()) - target, int64_t(cand.size()));
    for (int64_t i = 0; i < n_drop; ++i) held.erase(cand[size_t(i)].second);
  }
};

std::vector<int32_t> view_positions(const KvView& v) { return {v.pos, v.pos + v.n_tokens}; }

// float64 softmax attention of query row q (n_heads = kH, no RoPE) over rows `pos` of layer l.
std::vector<double> reference_attention(const Tokens& tk, int l, const std::vector<int32_t>& pos,
                                        const float* q, float scale) {
  std::vector<double> out(kC, 0.0);
  for (int h = 0; h < kH; ++h) {
    std::vector<double> s;
    double m = -1e300;
    for (int32_t p : pos) {
      double d = 0;
      for (int i = 0; i < kHd; ++i) d += double(q[h * kHd + i]) * double(tk.at(p, l, 0)[h * kHd + i]);
      s.push_back(d * scale);
      m = std::max(m, s.back());
    }
    double z = 0;
    for (double& e : s) z += (e = std::exp(e - m));
    for (size_t j = 0; j < pos.size(); ++j)
      for (int i = 0; i < kHd; ++i) out[size_t(h * kHd + i)] += s[j] / z * double(tk.at(pos[j], l, 1)[h * kHd + i]);
  }
  return out;
}

// Feeds T tokens in steps cycling through `steps`; after every step checks the held positions
// (every layer) against the reference and the last query's attention against float64.
void check_rule(const L2EvictOptions& o, int64_t T, std::vector<int64_t> steps, uint32_t seed) {
  auto cache = make_l2evict_cache(o, make_plain_cache(shape(), KvDtype::F32));
  const Tokens tk = make_tokens(T, seed);
  Reference ref{o, {}, 0};
  const int seq = cache->add_sequence();
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> g(0, 1);
  int64_t dropped_any = 0;
  for (int64_t t0 = 0, i = 0; t0 < T; ++i) {
    const int64_t n = std::min(steps[size_t(i) % steps.size()], T - t0);
    cache->begin_step(seq, n);
    std::vector<float> k(size_t(n * kC)), v(size_t(n * kC)), q(size_t(n * kC)), out(size_t(n * kC));
    for (auto& e : q) e = g(rng);
    for (int l = 0; l < kL; ++l) {
      for (int64_t j = 0; j < n; ++j) {
        std::memcpy(&k[size_t(j * kC)], tk.at(t0 + j, l, 0), kC * 4);
        std::memcpy(&v[size_t(j * kC)], tk.at(t0 + j, l, 1), kC * 4);
      }
      cache->append(l, k.data(), v.data());
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kH;
      a.scale = 0.35f;
      cache->attend(l, a);
      // The last query sees every held row and the step's rows.
      std::vector<int32_t> vis = view_positions(cache->read(l));
      const auto want = reference_attention(tk, l, vis, q.data() + (n - 1) * kC, a.scale);
      for (int c = 0; c < kC; ++c) ASSERT_NEAR(out[size_t((n - 1) * kC + c)], want[size_t(c)], 1e-4) << "layer " << l;
    }
    cache->end_step();
    ref.step(tk, n);
    t0 += n;
    std::vector<int32_t> want;
    for (const auto& [p, s] : ref.held) want.push_back(p);
    cache->begin_step(seq, 0);
    for (int l = 0; l < kL; ++l) ASSERT_EQ(view_positions(cache->read(l)), want) << "after " << t0 << " tokens, layer " << l;
    cache->end_step();
    ASSERT_EQ(cache->n_tokens(seq), t0);
    dropped_any = std::max<int64_t>(dropped_any, t0 - int64_t(want.size()));
    // Every byte counted per original value: f32 rows held / positions.
    const auto bits = cache->bits_report(seq);
    ASSERT_EQ(bits.size(), 1u);
    EXPECT_NEAR(bits[0].bits_per_value, 32.0 * double(want.size()) / double(t0), 1e-9);
    EXPECT_EQ(cache->live_bytes(), int64_t(want.size()) * kL * 2 * kC * 4);
  }
  if (o.keep < 1.0) {
    EXPECT_GT(dropped_any, 0) << "the run never evicted: the test checks nothing";
  }
}

TEST(L2Evict, HeldRowsEqualBruteForceRule) {
  check_rule({0.5, 4, 16, 0}, 300, {7, 1, 1, 13}, 1);
  check_rule({0.3, 0, 0, 0}, 200, {1}, 2);
  check_rule({0.25, 2, 8, 8}, 400, {32, 1, 5}, 3);
  check_rule({0.6, 1, 4, 3}, 150, {64, 2}, 4);
  check_rule({1.0, 4, 16, 0}, 100, {5}, 5);
}

// A compressed cache with predictors (the AQUA-KV chain) and a lossy codec: after every step,
// each row the evicting cache holds equals bit for bit the row at the same position of a cache
// fed the same tokens that never drops, in sinks, codes and buffer alike.
std::shared_ptr<Adapters> rand_adapters() {
  std::mt19937 rng(5);
  auto a = std::make_shared<Adapters>();
  a->model = {"test", kL, kH, kHd, kC, 1};
  a->layers.resize(kL);
  auto map = [&](int64_t in) {
    std::normal_distribution<float> g(0, 0.5f / std::sqrt(float(in)));
    AffineMap m;
    m.in = in;
    m.out = kC;
    m.w.resize(size_t(in * kC));
    m.bias.resize(kC);
    for (auto& e : m.w) e = g(rng);
    for (auto& e : m.bias) e = g(rng);
    return m;
  };
  for (int l = 1; l < kL; ++l) {
    a->layers[size_t(l)].key = map(kC);
    a->layers[size_t(l)].value = map(2 * kC);
  }
  return a;
}

CompressedCacheOptions coarse(int64_t block) {
  CompressedCacheOptions o;
  o.name = "test-aquakv";
  o.sinks = 3;
  o.buffer = 16;
  o.key_codec = std::make_shared<CoarseCodec>(kC, 3, block);
  o.value_codec = std::make_shared<CoarseCodec>(kC, 2, block);
  o.adapters = rand_adapters();
  return o;
}

// With predictors (keys before RoPE) and without them, keys stored after RoPE (rows keep their
// positions' rotation after a drop; new rows rotate at their positions, not their row index).
void check_compressed_drops(bool predictors) {
  const L2EvictOptions o{0.4, 4, 8, 4};
  KvShape sh = shape();
  CompressedCacheOptions co = coarse(1);
  if (!predictors) {
    sh.rope.n_rot = kHd;
    co.adapters = nullptr;
    co.keys_after_rope = true;
  }
  auto ev = make_l2evict_cache(o, make_compressed_cache(sh, co));
  auto full = make_compressed_cache(sh, co);
  const int64_t T = 260;
  const Tokens tk = make_tokens(T, 9);
  Reference ref{o, {}, 0};
  const int se = ev->add_sequence(), sf = full->add_sequence();
  int64_t t0 = 0;
  for (int64_t n : {40, 1, 1, 3, 17, 1, 30, 1, 1, 1, 64, 2, 1, 50, 1, 1, 1, 45}) {
    n = std::min(n, T - t0);
    ev->begin_step(se, n);
    full->begin_step(sf, n);
    std::vector<float> k(size_t(n * kC)), v(size_t(n * kC));
    for (int l = 0; l < kL; ++l) {
      for (int64_t j = 0; j < n; ++j) {
        std::memcpy(&k[size_t(j * kC)], tk.at(t0 + j, l, 0), kC * 4);
        std::memcpy(&v[size_t(j * kC)], tk.at(t0 + j, l, 1), kC * 4);
      }
      ev->append(l, k.data(), v.data());
      full->append(l, k.data(), v.data());
      const KvView a = ev->read(l), b = full->read(l);
      ASSERT_EQ(b.n_tokens, t0 + n);
      for (int64_t r = 0; r < a.n_tokens; ++r) {
        const int32_t p = a.pos[r];
        ASSERT_EQ(b.pos[p], p);
        ASSERT_EQ(0, std::memcmp(static_cast<const float*>(a.k) + r * a.row_stride,
                                 static_cast<const float*>(b.k) + p * b.row_stride, kC * 4)) << "layer " << l << " pos " << p;
        ASSERT_EQ(0, std::memcmp(static_cast<const float*>(a.v) + r * a.row_stride,
                                 static_cast<const float*>(b.v) + p * b.row_stride, kC * 4)) << "layer " << l << " pos " << p;
      }
    }
    ev->end_step();
    full->end_step();
    ref.step(tk, n);
    t0 += n;
    std::vector<int32_t> want;
    for (const auto& [p, s] : ref.held) want.push_back(p);
    ev->begin_step(se, 0);
    for (int l = 0; l < kL; ++l) ASSERT_EQ(view_positions(ev->read(l)), want) << "after " << t0 << " tokens";
    ev->end_step();
    if (t0 >= T) break;
  }
  EXPECT_EQ(t0, T);
  EXPECT_LT(ev->live_bytes(), full->live_bytes() * 6 / 10);
  // Per original value: the report's terms add up to the live bytes over every position.
  double bits = 0;
  for (const auto& t : ev->bits_report(se)) bits += t.bits_per_value;
  EXPECT_NEAR(bits, 8.0 * double(ev->live_bytes()) / double(T * kL * 2 * kC), 1e-9);
}

TEST(L2Evict, CompressedRowsSurviveDropsBitForBit) {
  check_compressed_drops(true);
  check_compressed_drops(false);
}

TEST(L2Evict, CodesInMultiRowBlocksAreNotDropped) {
  try {
    make_l2evict_cache({0.3, 0, 0, 0}, make_compressed_cache(shape(), coarse(4)));
    FAIL() << "a format with 4-row code blocks was wrapped";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot drop single rows"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(make_compressed_cache(shape(), coarse(1))->can_drop_rows());
  // The format itself refuses when asked anyway (once rows are coded).
  auto ev = make_compressed_cache(shape(), coarse(4));
  const int seq = ev->add_sequence();
  const Tokens tk = make_tokens(64, 3);
  std::vector<float> k(size_t(32 * kC)), v(size_t(32 * kC));
  ev->begin_step(seq, 32);
  for (int l = 0; l < kL; ++l) {
    for (int64_t j = 0; j < 32; ++j) {
      std::memcpy(&k[size_t(j * kC)], tk.at(j, l, 0), kC * 4);
      std::memcpy(&v[size_t(j * kC)], tk.at(j, l, 1), kC * 4);
    }
    ev->append(l, k.data(), v.data());
  }
  ev->end_step();
  try {
    const int32_t drop[] = {5};
    ev->drop_rows(seq, drop);
    FAIL() << "dropping coded rows in blocks of 4 was not refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks of 4"), std::string::npos) << e.what();
  }
}

TEST(L2Evict, SpecsAndRefusals) {
  const KvShape s = shape();
  auto c = make_cache("l2evict:0.5,r=8+fp16", s);
  EXPECT_EQ(c->name(), "l2evict:0.5,p=4,r=8,e=32+fp16");
  EXPECT_EQ(make_cache("l2evict:0.25,p=0,r=0,e=0+higgs2,p=0,b=1", s)->name().rfind("l2evict:0.25,p=0,r=0,e=0+", 0), 0u);
  expect_specs_refused({"l2evict", "l2evict:0.5", "l2evict:0.5+", "l2evict:1.5+fp16", "l2evict:0+fp16",
                          "l2evict:-0.5+fp16", "l2evict:abc+fp16", "l2evict:0.5,x=1+fp16", "l2evict:0.5,p=-1+fp16",
                          "l2evict:0.5,r+fp16", "l2evict:0.5,e=1.5+fp16", "l2evict:0.5+nosuch", "l2evict:nan+fp16"}, s, "kv");
  const int seq = c->add_sequence();
  struct Sink final : KvStateOut {
    void put(const std::string&, const void*, int64_t) override {}
  } out;
  EXPECT_THROW(c->save_state(seq, out), Error);
}

}  // namespace
}  // namespace aquakv
