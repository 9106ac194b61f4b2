// Tests of KVSharer layer sharing (kv/layer_share.h, calib/kvsharer_fit.h): the search equals a
// brute-force replay of the rule written here (distances, ranking and the acceptance walk), and a
// hand-worked case; a shared layer's attention equals a float64 softmax of its own queries over
// its source layer's rows; bytes and bits count shared layers as 0; bad plans, plan files, specs
// and search settings are refused with one line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "aquakv/calib/kvsharer_fit.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/layer_share.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/fp16.h"

#include "kv_spec_checks.h"
#include "test_codecs.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

constexpr int kL = 5, kH = 2, kHd = 8, kC = kH * kHd, kQH = 4;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 256;
  return s;  // no RoPE: attention compares the given keys
}

float h(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }

// --- the search ---

struct RefTrial {
  int i, j;
  bool accepted;
};

// The rule replayed by brute force: every pair's distance in double, the best remaining pair
// picked by a linear scan each time (no sort), the walk over them.
std::pair<std::vector<int32_t>, std::vector<RefTrial>> reference_search(
    const std::vector<std::vector<double>>& m, const std::set<std::pair<int, int>>& banned, int target,
    double threshold, int64_t max_trials, const std::function<double(const std::vector<int32_t>&)>& sim) {
  const int L = int(m.size());
  std::vector<std::tuple<double, int, int>> left;
  for (int i = 0; i < L; ++i)
    for (int j = i + 1; j < L; ++j) {
      if (banned.count({i, j})) continue;
      double d = 0;
      for (size_t c = 0; c < m[0].size(); ++c) d += (m[size_t(i)][c] - m[size_t(j)][c]) * (m[size_t(i)][c] - m[size_t(j)][c]);
      left.emplace_back(std::sqrt(d), i, j);
    }
  std::vector<int32_t> src(size_t(L), -1);
  std::vector<RefTrial> log;
  while (!left.empty()) {
    int shared = 0;
    for (int32_t s : src) shared += s >= 0;
    if (shared >= target || (max_trials > 0 && int64_t(log.size()) >= max_trials)) break;
    size_t best = 0;
    for (size_t k = 1; k < left.size(); ++k) {
      const auto& [d, i, j] = left[k];
      const auto& [bd, bi, bj] = left[best];
      if (d > bd || (d == bd && (i < bi || (i == bi && j < bj)))) best = k;
    }
    const auto [d, i, j] = left[best];
    left.erase(left.begin() + std::ptrdiff_t(best));
    bool j_is_source = false;
    for (int32_t s : src) j_is_source |= s == j;
    if (src[size_t(j)] >= 0 || j_is_source || src[size_t(i)] >= 0) continue;
    auto cand = src;
    cand[size_t(j)] = i;
    const bool ok = sim(cand) >= threshold;
    if (ok) src = cand;
    log.push_back({i, j, ok});
  }
  return {src, log};
}

TEST(KvSharerSearch, EqualsBruteForceReplayOfTheRule) {
  for (int seed = 1; seed <= 12; ++seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> g(0, 1);
    const int L = 6 + seed % 5;
    std::vector<std::vector<double>> m(size_t(L), std::vector<double>(7));
    for (auto& v : m)
      for (auto& e : v) e = g(rng) * (seed % 3 == 0 ? 1.0 : 3.0);
    if (seed % 4 == 0) m[3] = m[1];  // equal distances: the tie rule decides
    // A similarity the search cannot guess: each (j reads i) costs a fixed penalty.
    std::map<std::pair<int, int>, double> pen;
    std::uniform_real_distribution<double> u(0.0, 0.2);
    for (int i = 0; i < L; ++i)
      for (int j = i + 1; j < L; ++j) pen[{i, j}] = u(rng);
    auto sim = [&](const std::vector<int32_t>& src) {
      double s = 1.0;
      for (int j = 0; j < L; ++j)
        if (src[size_t(j)] >= 0) s -= pen[{src[size_t(j)], j}];
      return s;
    };
    std::set<std::pair<int, int>> banned = {{0, L - 1}, {2, 4}};
    KvSharerSearchOptions o;
    o.target = 1 + seed % (L - 1);
    o.threshold = 0.85 + 0.01 * (seed % 5);
    o.max_trials = seed % 3 == 1 ? 5 : 0;
    const auto ranked = kvsharer_rank_pairs(m, [&](int i, int j) { return !banned.count({i, j}); });
    const auto got = kvsharer_search(L, ranked, o, sim);
    const auto [want_src, want_log] = reference_search(m, banned, o.target, o.threshold, o.max_trials, sim);
    EXPECT_EQ(got.source, want_src) << "seed " << seed;
    ASSERT_EQ(got.trials.size(), want_log.size()) << "seed " << seed;
    for (size_t k = 0; k < want_log.size(); ++k) {
      EXPECT_EQ(got.trials[k].i, want_log[k].i) << seed << " trial " << k;
      EXPECT_EQ(got.trials[k].j, want_log[k].j) << seed << " trial " << k;
      EXPECT_EQ(got.trials[k].accepted, want_log[k].accepted) << seed << " trial " << k;
    }
    EXPECT_NO_THROW(check_layer_share_plan(got.source, "test"));
  }
}

TEST(KvSharerSearch, HandWorkedCaseSharesTheMostDissimilarPairsFirst) {
  // 1-d means 0, 1, 10, 3: distances (0,2)=10 (1,2)=9 (2,3)=7 (0,3)=3 (1,3)=2 (0,1)=1. Every
  // candidate passes: 2 reads 0; (1,2) and (2,3) involve shared layer 2; 3 reads 0.
  const std::vector<std::vector<double>> m = {{0}, {1}, {10}, {3}};
  const auto ranked = kvsharer_rank_pairs(m, [](int, int) { return true; });
  ASSERT_EQ(ranked.size(), 6u);
  EXPECT_EQ(ranked[0].distance, 10.0);
  KvSharerSearchOptions o;
  o.target = 2;
  o.threshold = 0.5;
  const auto s = kvsharer_search(4, ranked, o, [](const std::vector<int32_t>&) { return 1.0; });
  EXPECT_EQ(s.source, (std::vector<int32_t>{-1, -1, 0, 0}));
  EXPECT_EQ(s.trials.size(), 2u);
  // A similarity below the threshold for "2 reads 0" moves on to the next candidates.
  const auto t = kvsharer_search(4, ranked, o, [](const std::vector<int32_t>& p) { return p[2] == 0 ? 0.4 : 1.0; });
  EXPECT_EQ(t.source, (std::vector<int32_t>{-1, -1, 1, 0}));
}

TEST(KvSharerSearch, BadSettingsRefused) {
  const auto ranked = kvsharer_rank_pairs({{0}, {1}, {2}}, [](int, int) { return true; });
  auto one = [](const std::vector<int32_t>&) { return 1.0; };
  for (auto [target, thr, trials] : {std::tuple{0, 0.9, 0}, {3, 0.9, 0}, {1, 1.5, 0}, {1, std::nan(""), 0}, {1, 0.9, -1}}) {
    KvSharerSearchOptions o;
    o.target = target;
    o.threshold = thr;
    o.max_trials = trials;
    try {
      kvsharer_search(3, ranked, o, one);
      ADD_FAILURE() << target << " " << thr << " " << trials << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

// --- the cache ---

class KvSharerCache : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("aquakv_kv_sharer_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string plan_file(const std::vector<int32_t>& src, const std::string& name = "p.plan") {
    LayerSharePlan p;
    p.model.arch = "llama";
    p.model.n_layers = int64_t(src.size());
    p.model.n_kv_heads = kH;
    p.model.head_dim = kHd;
    p.model.kv_width = kC;
    p.source = src;
    p.notes = "{}";
    const std::string path = (dir_ / name).string();
    save_layer_share_plan(p, path);
    return path;
  }
  fs::path dir_;
};

TEST_F(KvSharerCache, SharedLayerAttendsOverItsSourceRows) {
  const std::vector<int32_t> src = {-1, -1, 0, 1, 0};  // layers 2, 4 read 0; layer 3 reads 1
  auto cache = make_cache("kvsharer:" + plan_file(src), shape());
  EXPECT_EQ(cache->name(), "kvsharer:" + (dir_ / "p.plan").string() + "+fp16");
  const int seq = cache->add_sequence();
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0, 1);
  std::vector<std::vector<float>> kin(kL), vin(kL);  // rows each layer was given (fp16-rounded)
  int64_t T = 0;
  for (int64_t n : {3, 1, 7, 2, 1, 12}) {
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      std::vector<float> k(size_t(n * kC)), v(size_t(n * kC)), q(size_t(n * kQH * kHd)), out(q.size());
      for (auto& e : k) e = g(rng);
      for (auto& e : v) e = g(rng);
      for (auto& e : q) e = g(rng);
      cache->append(l, k.data(), v.data());
      for (float e : k) kin[size_t(l)].push_back(h(e));
      for (float e : v) vin[size_t(l)].push_back(h(e));
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.3f;
      cache->attend(l, a);
      // Every query against the rows of the layer that stores them, causal, float64.
      const int r = src[size_t(l)] < 0 ? l : src[size_t(l)];
      for (int64_t i = 0; i < n; ++i)
        for (int qh = 0; qh < kQH; ++qh) {
          const int kh = qh / (kQH / kH);
          const int64_t R = T + i + 1;
          std::vector<double> s(static_cast<size_t>(R));
          double mx = -1e300, z = 0;
          for (int64_t t = 0; t < R; ++t) {
            double d = 0;
            for (int c = 0; c < kHd; ++c)
              d += double(q[size_t((i * kQH + qh) * kHd + c)]) * kin[size_t(r)][size_t(t * kC + kh * kHd + c)];
            mx = std::max(mx, s[size_t(t)] = d * a.scale);
          }
          for (auto& e : s) z += (e = std::exp(e - mx));
          for (int c = 0; c < kHd; ++c) {
            double acc = 0;
            for (int64_t t = 0; t < R; ++t) acc += s[size_t(t)] * vin[size_t(r)][size_t(t * kC + kh * kHd + c)];
            ASSERT_NEAR(out[size_t((i * kQH + qh) * kHd + c)], acc / z, 2e-5) << "layer " << l << " step at " << T;
          }
        }
      const KvView view = cache->read(l);
      ASSERT_EQ(view.n_tokens, T + n);
    }
    cache->end_step();
    T += n;
  }
  // Two layers store rows: 2 x T x C x (K, V) x 2 bytes; bits 16 x 2 / 5.
  EXPECT_EQ(cache->live_bytes(), 2 * T * kC * 2 * 2);
  double bits = 0;
  for (const auto& t : cache->bits_report(seq)) bits += t.bits_per_value;
  EXPECT_NEAR(bits, 16.0 * 2 / 5, 1e-12);
}

TEST_F(KvSharerCache, WrapsAnotherFormatOnTheCompactShape) {
  KvShape s = shape();
  s.head_dim = 64;
  s.n_kv_heads = 3;
  LayerSharePlan p;
  p.model = {"llama", kL, 3, 64, 192, 0};
  p.source = {-1, -1, 0, -1, 3};
  const std::string path = (dir_ / "w.plan").string();
  save_layer_share_plan(p, path);
  auto c = make_cache("kvsharer:" + path + "+higgs2", s);
  auto ref = make_cache("higgs2", compact_share_shape(s, p.source, p.checksum));
  EXPECT_EQ(ref->shape().n_layers, 3);
  const int seq = c->add_sequence(), rs = ref->add_sequence();
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0, 1);
  const int64_t n = 200;
  c->begin_step(seq, n);
  ref->begin_step(rs, n);
  for (int l = 0, cl = 0; l < kL; ++l) {
    std::vector<float> k(size_t(n * 192)), v(k.size());
    for (auto& e : k) e = g(rng);
    for (auto& e : v) e = g(rng);
    c->append(l, k.data(), v.data());
    if (p.source[size_t(l)] < 0) ref->append(cl++, k.data(), v.data());
  }
  c->end_step();
  ref->end_step();
  EXPECT_EQ(c->live_bytes(), ref->live_bytes());
  double bits = 0, rbits = 0;
  for (const auto& t : c->bits_report(seq)) bits += t.bits_per_value;
  for (const auto& t : ref->bits_report(rs)) rbits += t.bits_per_value;
  EXPECT_NEAR(bits, rbits * 3 / 5, 1e-12);
  EXPECT_LT(bits, 2.0);
}

// Eviction outside the wrapper drops rows of the layers that store them; a shared layer then
// reads its source's surviving rows.
TEST_F(KvSharerCache, EvictionAroundTheWrapperDropsStoredRows) {
  const std::vector<int32_t> src = {-1, -1, 0, 1, 0};
  auto cache = make_cache("l2evict:0.5,p=0,r=0,e=0+kvsharer:" + plan_file(src), shape());
  const int seq = cache->add_sequence();
  std::mt19937 rng(8);
  std::normal_distribution<float> g(0, 1);
  int64_t T = 0;
  for (int64_t n : {8, 8, 4}) {
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      std::vector<float> k(size_t(n * kC)), v(k.size()), q(size_t(n * kQH * kHd)), out(q.size());
      for (auto* x : {&k, &v, &q})
        for (auto& e : *x) e = g(rng);
      cache->append(l, k.data(), v.data());
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.3f;
      cache->attend(l, a);
      EXPECT_EQ(cache->read(l).n_tokens, cache->read(src[size_t(l)] < 0 ? l : src[size_t(l)]).n_tokens);
    }
    cache->end_step();
    T += n;
  }
  const int64_t held = (T + 1) / 2;  // ceil(0.5 T) with no sinks, recent window or slack
  cache->begin_step(seq, 0);
  EXPECT_EQ(cache->read(0).n_tokens, held);
  EXPECT_EQ(cache->read(4).n_tokens, held);
  cache->end_step();
  EXPECT_EQ(cache->live_bytes(), 2 * held * kC * 2 * 2);
}

// AQUA-KV inside: the predictor chain runs over the layers that store rows; the wrapper's copy
// of a source layer (read() right after its attention) must leave that chain untouched and give
// a shared layer what the source's own attention sees. Reference: an identical compressed cache
// fed the stored layers alone, asked for the source's attention out of layer order.
TEST_F(KvSharerCache, AquaKvChainIsUntouchedAndSharedLayersSeeTheirSource) {
  const std::vector<int32_t> src = {-1, -1, 0, -1, 1};  // stored: 0, 1, 3 (compact 0, 1, 2)
  const std::vector<int> compact = {0, 1, 0, 2, 1};
  KvShape sh = shape();
  sh.rope.n_rot = kHd;  // keys stored before RoPE and turned by the cache
  const KvShape cs = compact_share_shape(sh, src, 0);
  auto make = [&] {
    std::mt19937 rng(9);
    std::normal_distribution<float> g(0, 0.3f);
    auto ad = std::make_shared<Adapters>();
    ad->model = {"test", 3, kH, kHd, kC, 1};
    ad->layers.resize(3);
    for (int l = 1; l < 3; ++l)
      for (auto [m, in] : {std::pair{&ad->layers[size_t(l)].key, kC}, {&ad->layers[size_t(l)].value, 2 * kC}}) {
        m->in = in;
        m->out = kC;
        m->w.resize(size_t(in * kC));
        m->bias.resize(size_t(kC));
        for (auto& e : m->w) e = g(rng);
        for (auto& e : m->bias) e = g(rng);
      }
    CompressedCacheOptions o;
    o.name = "test-aquakv";
    o.sinks = 2;
    o.buffer = 8;
    o.key_codec = std::make_shared<CoarseCodec>(kC, 3);
    o.value_codec = std::make_shared<CoarseCodec>(kC, 3);
    o.adapters = ad;
    return make_compressed_cache(cs, o);
  };
  auto w = make_layer_share_cache(sh, src, make(), "kvsharer:test");
  auto ref = make();
  const int seq = w->add_sequence(), rseq = ref->add_sequence();
  std::mt19937 rng(4);
  std::normal_distribution<float> g(0, 1);
  for (int64_t n : {5, 3, 9, 1, 1, 12, 1, 2}) {
    w->begin_step(seq, n);
    ref->begin_step(rseq, n);
    std::vector<std::vector<float>> q(kL);
    for (int l = 0; l < kL; ++l) {
      std::vector<float> k(size_t(n * kC)), v(k.size()), out(size_t(n * kQH * kHd)), want(out.size());
      q[size_t(l)].resize(out.size());
      for (auto& e : k) e = g(rng);
      for (auto& e : v) e = g(rng);
      for (auto& e : q[size_t(l)]) e = g(rng);
      KvAttention a;
      a.n = n;
      a.q = q[size_t(l)].data();
      a.n_heads = kQH;
      a.scale = 0.3f;
      w->append(l, k.data(), v.data());
      if (src[size_t(l)] < 0) ref->append(compact[size_t(l)], k.data(), v.data());
      a.out = out.data();
      w->attend(l, a);
      a.out = want.data();
      ref->attend(compact[size_t(l)], a);
      for (size_t i = 0; i < out.size(); ++i) {
        if (src[size_t(l)] < 0) ASSERT_EQ(out[i], want[i]) << "stored layer " << l;
        else ASSERT_NEAR(out[i], want[i], 1e-5) << "shared layer " << l;
      }
    }
    w->end_step();
    ref->end_step();
  }
  EXPECT_EQ(w->live_bytes(), ref->live_bytes());
}

TEST_F(KvSharerCache, BadPlansFilesAndSpecsRefused) {
  const std::string good = plan_file({-1, -1, 0, 1, 0});
  // Plans: a source not earlier, a source that is itself shared, out of range.
  for (const auto& bad : {std::vector<int32_t>{-1, 1, -1}, {-1, 0, 1}, {-1, -2, -1}, {0, -1, -1}, {-1, 5, -1}}) {
    try {
      check_layer_share_plan(bad, "plan");
      ADD_FAILURE() << "plan accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  // Files: every single-byte change is caught (checksum, or a field check), truncations too.
  const std::string bytes = read_file(good, "plan", ReadKind::kData);
  auto write = [&](const std::string& name, const std::string& b) {
    const std::string path = (dir_ / name).string();
    write_file_atomic(path, b, "test");
    return path;
  };
  for (size_t at = 0; at < bytes.size(); at += 7) {
    std::string b = bytes;
    b[at] = char(b[at] ^ 0x5a);
    EXPECT_THROW(load_layer_share_plan(write("flip.plan", b)), Error) << "byte " << at;
  }
  for (size_t len : {size_t(0), size_t(4), size_t(20), bytes.size() - 9, bytes.size() - 1}) {
    try {
      load_layer_share_plan(write("cut.plan", bytes.substr(0, len)));
      ADD_FAILURE() << "truncated to " << len << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  const std::string three = plan_file({-1, -1, 0}, "three.plan");
  const std::string cut = write("cut2.plan", bytes.substr(0, 30));
  KvShape roped = shape();
  roped.layer_rope.resize(kL);
  roped.layer_rope[2].n_rot = 8;  // layer 2 turns its keys, its source 0 does not
  expect_specs_refused({"kvsharer", "kvsharer:", "kvsharer:+fp16", "kvsharer:nosuch.plan"}, shape());
  const std::string g = "kvsharer:" + good, t = "kvsharer:" + three, c = "kvsharer:" + cut;
  expect_specs_refused({(g + "+").c_str(), (g + "+nosuch").c_str(), t.c_str(), c.c_str()}, shape());
  expect_specs_refused({g.c_str()}, roped, "RoPE");
  KvShape other = shape();
  other.arch = "gemma3";
  expect_specs_refused({g.c_str()}, other, "architecture");
}

}  // namespace
}  // namespace aquakv
