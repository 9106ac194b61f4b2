// The cache seam's attention (kv/kv_cache.h, kv/attend.h, ops/attn_tile.h): the tile kernels
// against their float64 references; every format's fused attention against the generic dense
// path (attend_reference: read() + RoPE + float64 softmax) over prefill and decode steps, with
// RoPE and a sliding window; explicit positions; an attention observer used by a test policy;
// and, on the real model, fused vs reference logits for several formats.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/ops/attn_tile.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/grid.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "random_rows.h"
#include "model_fixture.h"

namespace aquakv {
namespace {

using testing::randn;

// Kernels: |score error| <= 2 hd eps32 sum_c |q_c k_c| (f32 dot of hd terms, any order);
// online update + accumulation: relative 1e-6 of the output scale (exp approximation 2e-7,
// t-term f32 sums).
// Every SIMD level the CPU has (scalar, AVX2, AVX-512), widths that take every register-count
// branch (12: scalar tail; 48: three registers; 192: the inner basis of a 3-head row), and
// query-row counts past the AVX-512 kernel's group of 12.
TEST(AttnTile, KernelsMatchFloat64References) {
  const SimdLevel saved = simd_level();
  for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
  set_simd_level(SimdLevel(lv));
  SCOPED_TRACE(simd_level_name(SimdLevel(lv)));
  for (const int64_t hd : {8, 64, 12, 48, 192}) {
    for (const int64_t M : {1, 3, 9, 14}) {
      for (const int64_t t : {1, 7, 128}) {
        const auto q = randn(size_t(M * hd), 1), k = randn(size_t(t * hd), 2), v = randn(size_t(t * hd), 3);
        std::vector<uint16_t> k16(k.size()), v16(v.size());
        for (size_t i = 0; i < k.size(); ++i) { k16[i] = fp32_to_fp16(k[i]); v16[i] = fp32_to_fp16(v[i]); }
        std::vector<float> s(size_t(M * t)), sr(s.size()), s16(s.size()), sr16(s.size());
        attn_scores(q.data(), M, hd, k.data(), t, hd, s.data(), t);
        attn_scores_ref(q.data(), M, hd, k.data(), t, hd, sr.data(), t);
        attn_scores_f16(q.data(), M, hd, k16.data(), t, hd, s16.data(), t);
        attn_scores_f16_ref(q.data(), M, hd, k16.data(), t, hd, sr16.data(), t);
        for (int64_t r = 0; r < M; ++r)
          for (int64_t j = 0; j < t; ++j) {
            double mag = 0;
            for (int64_t c = 0; c < hd; ++c) mag += std::fabs(double(q[size_t(r * hd + c)]) * k[size_t(j * hd + c)]);
            const double bound = 2.0 * double(hd) * 6e-8 * mag + 1e-30;
            ASSERT_LE(std::fabs(s[size_t(r * t + j)] - sr[size_t(r * t + j)]), bound);
            ASSERT_LE(std::fabs(s16[size_t(r * t + j)] - sr16[size_t(r * t + j)]), 1.01 * bound + 1e-6 * mag);
          }
        // Two tiles through the online update, against the references; second tile masked in part.
        for (const bool f16 : {false, true}) {
          std::vector<float> m(size_t(M), -INFINITY), l(size_t(M), 0), a(size_t(M * hd), 0);
          std::vector<float> mr = m, lr = l, ar = a;
          for (int tile = 0; tile < 2; ++tile) {
            std::vector<float> x = sr, xr = sr;
            if (tile == 1) for (int64_t r = 0; r < M; ++r) x[size_t(r * t)] = xr[size_t(r * t)] = -INFINITY;
            attn_online_update(x.data(), M, t, t, m.data(), l.data(), a.data(), hd);
            attn_online_update_ref(xr.data(), M, t, t, mr.data(), lr.data(), ar.data(), hd);
            if (f16) {
              attn_accum_f16(x.data(), M, t, t, v16.data(), hd, hd, a.data());
              attn_accum_f16_ref(xr.data(), M, t, t, v16.data(), hd, hd, ar.data());
            } else {
              attn_accum(x.data(), M, t, t, v.data(), hd, hd, a.data());
              attn_accum_ref(xr.data(), M, t, t, v.data(), hd, hd, ar.data());
            }
          }
          for (int64_t r = 0; r < M; ++r) {
            ASSERT_EQ(m[size_t(r)], mr[size_t(r)]);
            ASSERT_NEAR(l[size_t(r)], lr[size_t(r)], 2e-6 * lr[size_t(r)]);
            for (int64_t c = 0; c < hd; ++c)
              ASSERT_NEAR(a[size_t(r * hd + c)] / l[size_t(r)], ar[size_t(r * hd + c)] / lr[size_t(r)], 1e-5)
                  << "hd " << hd << " M " << M << " t " << t << " f16 " << f16;
          }
        }
      }
    }
  }
  }
  set_simd_level(saved);
}

// Merging two partial states equals one pass over both tiles.
TEST(AttnTile, MergeEqualsOnePass) {
  const int64_t M = 3, hd = 16, t = 40;
  const auto q = randn(size_t(M * hd), 4), k = randn(size_t(2 * t * hd), 5), v = randn(size_t(2 * t * hd), 6);
  auto run = [&](int64_t r0, int64_t r1, std::vector<float>& m, std::vector<float>& l, std::vector<float>& a) {
    std::vector<float> s(size_t(M * (r1 - r0)));
    attn_scores_ref(q.data(), M, hd, k.data() + r0 * hd, r1 - r0, hd, s.data(), r1 - r0);
    attn_online_update_ref(s.data(), M, r1 - r0, r1 - r0, m.data(), l.data(), a.data(), hd);
    attn_accum_ref(s.data(), M, r1 - r0, r1 - r0, v.data() + r0 * hd, hd, hd, a.data());
  };
  std::vector<float> m1(M, -INFINITY), l1(M, 0), a1(M * hd, 0), m2 = m1, l2 = l1, a2 = a1, m = m1, l = l1, a = a1;
  run(0, t, m1, l1, a1);
  run(t, 2 * t, m2, l2, a2);
  run(0, 2 * t, m, l, a);
  attn_merge(m1.data(), l1.data(), a1.data(), m2.data(), l2.data(), a2.data(), M, hd);
  for (int64_t i = 0; i < M * hd; ++i) EXPECT_NEAR(a1[size_t(i)] / l1[size_t(i / hd)], a[size_t(i)] / l[size_t(i / hd)], 1e-5);
}

// A small model-like shape: 3 KV heads of 64 (C = 192, the default model's width), 9 query
// heads, RoPE on every channel pair.
KvShape shape(std::vector<int64_t> window = {}) {
  KvShape s;
  s.n_layers = 3;
  s.n_kv_heads = 3;
  s.head_dim = 64;
  s.max_tokens = 512;
  s.rope.n_rot = 64;
  s.rope.freq_base = 10000.0;
  s.window = std::move(window);
  return s;
}
constexpr int kHeads = 9;

// Random AQUA-KV predictors (small weights) and HIGGS codecs, built without a file.
std::unique_ptr<KvCache> random_aquakv(const KvShape& s) {
  const int64_t C = s.width();
  auto a = std::make_shared<Adapters>();
  a->model = {"test", s.n_layers, s.n_kv_heads, s.head_dim, C, 0};
  a->layers.resize(size_t(s.n_layers));
  for (int l = 1; l < s.n_layers; ++l) {
    auto& lp = a->layers[size_t(l)];
    lp.key.in = lp.key.out = lp.value.out = C;
    lp.value.in = 2 * C;
    lp.key.w = randn(size_t(C * C), 10 + l, 0.5f / std::sqrt(float(C)));
    lp.value.w = randn(size_t(2 * C * C), 20 + l, 0.5f / std::sqrt(float(C)));
    lp.key.bias = randn(size_t(C), 30 + l, 0.1f);
    lp.value.bias = randn(size_t(C), 40 + l, 0.1f);
  }
  CompressedCacheOptions o;
  o.name = "aquakv-random";
  o.sinks = 4;
  o.buffer = 32;
  o.key_codec = std::shared_ptr<const Codec>(make_codec("higgs2", C));
  o.value_codec = std::shared_ptr<const Codec>(make_codec("higgs2", C));
  o.layer0_key_codec = o.layer0_value_codec = std::shared_ptr<const Codec>(make_codec("higgs4", C));
  o.adapters = a;
  return make_compressed_cache(s, o);
}

std::unique_ptr<KvCache> make(const std::string& spec, const KvShape& s) {
  return spec == "aquakv-random" ? random_aquakv(s) : make_cache(spec, s);
}

const std::vector<std::string> kFormats = {"fp16", "f32", "q8_0", "q4_0", "q8_0r", "q4_0r", "kivi2", "kivi4",
                                           "higgs2", "higgs3", "higgs4", "aquakv-random",
                                           "higgs2,p=4,b=16",
                                           // one group spanning every head: the inner basis shared by all query heads
                                           "higgs:2x16,p=4,b=16", "higgs:2x64,p=4,b=16"};

// Decode steps over q8_0 / q4_0 keys score a quantized query (ops/attn_qblock.h): per block of 32
// values of q*scale, e = max|x|/127 and z = nearest-even(x * (1/e)) in f32, the query becomes z e.
// Rotated blocks (q8_0r, q4_0r) round the query in their basis: per head y = R x with R = H/sqrt(hd)
// (Sylvester order, float64 here), y rounded as above, and the query becomes R y' (R R = I). Every
// row of the step meets that query, so the references below run on it (divided by the scale
// again) and fused and reference differ by float rounding only; the query rounding itself is
// bounded in test_attn_qblock.cpp and its effect on quality measured by perplexity
// (docs/RESULTS.md).
bool rotated_spec(const std::string& spec) { return spec == "q8_0r" || spec == "q4_0r"; }
bool qblock_step(const std::string& spec, const KvAttention& a, const KvShape& s) {
  return attend_qblock_enabled() && (spec == "q8_0" || spec == "q4_0" || rotated_spec(spec)) &&
         s.head_dim % 32 == 0 && a.n * (a.n_heads / s.n_kv_heads) < 16;
}
void sylvester(const double* x, double* y, int64_t h) {
  for (int64_t i = 0; i < h; ++i) {
    double acc = 0;
    for (int64_t j = 0; j < h; ++j) acc += (std::popcount(uint64_t(i & j)) % 2 ? -1.0 : 1.0) * x[j];
    y[i] = acc / std::sqrt(double(h));
  }
}
std::vector<float> qblock_query(const KvAttention& a, int64_t hd, bool rotated) {
  const int64_t m = a.n * a.n_heads * hd;
  std::vector<float> out(static_cast<size_t>(m));
  std::vector<double> x(static_cast<size_t>(hd)), y(static_cast<size_t>(hd));
  for (int64_t h0 = 0; h0 < m; h0 += hd) {
    for (int64_t i = 0; i < hd; ++i) x[size_t(i)] = double(a.q[h0 + i] * a.scale);
    if (rotated) sylvester(x.data(), y.data(), hd);
    else y = x;
    for (int64_t b = 0; b < hd; b += 32) {
      float v[32], amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i] = float(y[size_t(b + i)])));
      const float e = amax / 127.0f, ie = e != 0 ? 1.0f / e : 0.0f;
      for (int i = 0; i < 32; ++i) y[size_t(b + i)] = double(std::nearbyint(v[i] * ie)) * e;
    }
    if (rotated) sylvester(y.data(), x.data(), hd);
    else x = y;
    for (int64_t i = 0; i < hd; ++i) out[size_t(h0 + i)] = float(x[size_t(i)] / a.scale);
  }
  return out;
}

// Decode steps over HIGGS 2x16 keys score them by per-query byte tables (ops/attn_lut.h) when
// attend_lut_enabled(): each coded key's score is then off by at most eps = f (P / 2) delta, with
// f = ||key group|| / g (the stored RMS / sqrt(g)), P = g / 2 pairs and delta = the widest pair
// range of the query over the grid / 255 <= ||q scale|| D / 255 (D: the grid's diameter; the inner
// basis keeps norms). Scores moved by at most eps move softmax weights by factors within
// e^(+-2 eps), so the output moves by at most (e^(2 eps) - 1) max|v|. The formats below take the
// table path (keys after RoPE, one group per head's span); the bound is checked with tables on and
// the tight one with them off.
int64_t lut_group(const std::string& spec, const KvShape& s) {
  if (spec == "higgs2" || spec == "higgs2,p=4,b=16" || spec == "higgs2,b=16") return s.head_dim;
  if (spec == "higgs:2x16,p=4,b=16" || spec == "higgs:2x16,b=16") return higgs_default_group(s.width());
  return 0;
}
double grid_diameter() {
  const Grid& g = builtin_grid(2, 16);
  double d = 0;
  for (int64_t a = 0; a < g.n; ++a)
    for (int64_t b = 0; b < g.n; ++b)
      d = std::max(d, std::hypot(double(g.point(a)[0] - g.point(b)[0]), double(g.point(a)[1] - g.point(b)[1])));
  return d;
}
// max over groups of rows of ||x_group|| / g.
double max_group_factor(const float* x, int64_t values, int64_t g) {
  double m = 0;
  for (int64_t i = 0; i < values; i += g) {
    double ss = 0;
    for (int64_t c = 0; c < g; ++c) ss += double(x[i + c]) * x[i + c];
    m = std::max(m, std::sqrt(ss) / double(g));
  }
  return m;
}
double max_query_norm(const KvAttention& a, int64_t hd) {
  double m = 0;
  for (int64_t h0 = 0; h0 < a.n * a.n_heads * hd; h0 += hd) {
    double ss = 0;
    for (int64_t c = 0; c < hd; ++c) ss += double(a.q[h0 + c]) * a.q[h0 + c];
    m = std::max(m, std::sqrt(ss) * a.scale);
  }
  return m;
}
double lut_output_bound(int64_t g, double fmax, double qnorm, double vmax) {
  const double eps = fmax * double(g / 2) / 2 * qnorm * grid_diameter() / 255.0;
  return std::expm1(2 * eps) * vmax;
}

// Fused attend() against attend_reference, over steps that mix prefill (several tiles, several
// query blocks) and decode, crossing the compressed formats' buffer flushes. Two caches fed the
// same rows: one only attends fused, the other only through the reference (read()), so a fused
// path that reads rows it did not write this step (AQUA-KV rebuilds a layer inside attention,
// into buffers that hold other layers' rows) cannot borrow the reference's work. Bound: float32 scores and sums and the exp approximation (kernel test above) give
// relative errors ~1e-6; 1e-4 of the largest |v| leaves 100x margin while a wrong mask, position,
// RoPE or head mapping is off by O(1).
void check_fused(const KvShape& s) {
  const int64_t C = s.width(), Q = int64_t(kHeads) * s.head_dim;
  const bool lut_default = attend_lut_enabled();
  for (const auto& spec : kFormats)
    for (const bool lut : {false, true}) {
    const int64_t lg = lut_group(spec, s);
    if (lut && lg == 0) continue;
    set_attend_lut(lg > 0 ? lut : lut_default);
    double fmax = 0, qnorm = 0, vmax = 0;
    auto cache = make(spec, s), twin = make(spec, s);
    const int seq = cache->add_sequence(), tseq = twin->add_sequence();
    uint32_t seed = 100;
    double worst = 0, qround = 0;
    for (const int64_t n : {37, 1, 1, 64, 130, 1, 3, 1}) {
      cache->begin_step(seq, n);
      twin->begin_step(tseq, n);
      for (int l = 0; l < s.n_layers; ++l) {
        const auto k = randn(size_t(n * C), seed++), v = randn(size_t(n * C), seed++);
        const auto q = randn(size_t(n * Q), seed++, 2.0f);
        cache->append(l, k.data(), v.data());
        twin->append(l, k.data(), v.data());
        if (lg > 0) fmax = std::max(fmax, max_group_factor(k.data(), n * C, lg));
        for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
        std::vector<float> fused(size_t(n * Q)), ref(size_t(n * Q));
        KvAttention a;
        a.n = n;
        a.q = q.data();
        a.n_heads = kHeads;
        a.scale = 0.125f;
        a.out = fused.data();
        qnorm = std::max(qnorm, max_query_norm(a, s.head_dim));
        cache->attend(l, a);
        a.out = ref.data();
        attend_reference(*twin, l, a);
        if (qblock_step(spec, a, s)) {
          const std::vector<float> qq = qblock_query(a, s.head_dim, rotated_spec(spec));
          std::vector<float> exact = ref;
          a.q = qq.data();
          attend_reference(*twin, l, a);
          for (size_t i = 0; i < ref.size(); ++i) qround = std::max(qround, double(std::fabs(exact[i] - ref[i])));
        }
        for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, double(std::fabs(fused[i] - ref[i])));
      }
      cache->end_step();
      twin->end_step();
    }
    std::printf("%-16s fused vs reference: max |d out| %.2e", spec.c_str(), worst);
    if (qround > 0) std::printf(" (reference on the int8 query; its rounding moves the output by up to %.2e)", qround);
    const double tables = lut ? lut_output_bound(lg, fmax, qnorm, vmax) : 0.0;
    if (lut) std::printf(" (byte tables on; their bound %.2e)", tables);
    std::printf("\n");
    EXPECT_LT(worst, 1e-4 * 5.0 + tables) << spec << (lut ? " tables on" : "");  // |v| <= ~5 (normal samples)
    }
  set_attend_lut(lut_default);
}

TEST(KvAttend, FusedMatchesReferenceEveryFormat) { check_fused(shape()); }
TEST(KvAttend, FusedMatchesReferenceWithSlidingWindow) { check_fused(shape({0, 16, 100})); }

// Rows carry their positions; every format stores rotated keys except AQUA-KV, whose
// predictors work on keys before RoPE, and KIVI (rope=pre by default).
TEST(KvAttend, ExplicitPositions) {
  for (const auto& spec : kFormats) {
    auto cache = make(spec, shape());
    const int seq = cache->add_sequence();
    const int64_t C = shape().width();
    for (const int64_t n : {40, 1, 50}) {
      cache->begin_step(seq, n);
      for (int l = 0; l < 3; ++l) {
        const auto k = randn(size_t(n * C), 7);
        cache->append(l, k.data(), k.data());
        const KvView v = cache->read(l);
        ASSERT_EQ(v.n_tokens, cache->n_tokens(seq) + n);
        for (int64_t t = 0; t < v.n_tokens; ++t) ASSERT_EQ(v.pos[t], t) << spec;
        EXPECT_EQ(v.k_roped, spec != "aquakv-random" && spec.rfind("kivi", 0) != 0) << spec;
      }
      cache->end_step();
    }
  }
}

// A test policy on the observer hook: accumulates, per position, the attention mass that the
// queries of one layer give it (the statistic heavy-hitter eviction keeps). Weights of every
// (query, head) must sum to 1 over visible rows only; a key planted to align with every query
// must collect the most mass.
struct AttentionMass : KvAttentionObserver {
  std::map<int32_t, double> mass;
  int64_t calls = 0;
  int64_t window = 0;
  void on_weights(int layer, int64_t, int64_t qpos, int, std::span<const int32_t> pos,
                  std::span<const float> w) override {
    ++calls;
    double sum = 0;
    for (size_t j = 0; j < pos.size(); ++j) {
      EXPECT_LE(pos[j], qpos);
      if (window > 0 && layer == 1) {
        EXPECT_GT(int64_t(pos[j]), qpos - window);
      }
      sum += w[j];
      if (layer == 1) mass[pos[j]] += w[j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
};

TEST(KvAttend, ObserverPolicySeesExactWeights) {
  KvShape s = shape({0, 8, 0});
  s.rope.n_rot = 0;
  const int64_t C = s.width(), Q = int64_t(kHeads) * s.head_dim, n = 60;
  for (const char* spec : {"fp16", "higgs2"}) {
    auto cache = make_cache(spec, s);
    const int seq = cache->add_sequence();
    AttentionMass pol;
    cache->begin_step(seq, n);
    // Keys: small noise, except position 9 whose keys are all 4; queries are all 4 plus noise
    // (RoPE off in this shape), so every query favours position 9.
    auto k = randn(size_t(n * C), 11, 0.1f), v = randn(size_t(n * C), 12);
    auto q = randn(size_t(n * Q), 13, 0.1f);
    for (int64_t c = 0; c < C; ++c) k[size_t(9 * C + c)] = 4.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < Q; ++c) q[size_t(i * Q + c)] += 4.0f;
    for (int l = 0; l < 3; ++l) {
      cache->append(l, k.data(), v.data());
      std::vector<float> out(size_t(n * Q));
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.n_heads = kHeads;
      a.scale = 0.125f;
      a.out = out.data();
      a.observer = &pol;
      cache->attend(l, a);
    }
    cache->end_step();
    EXPECT_EQ(pol.calls, 3 * n * kHeads);
    ASSERT_FALSE(pol.mass.empty());
    const auto best = std::max_element(pol.mass.begin(), pol.mass.end(),
                                       [](const auto& x, const auto& y) { return x.second < y.second; });
    EXPECT_EQ(best->first, 9) << spec;
  }
}

// On the real model. A quantizing format re-rounds what the next layer stores, so a 1e-6
// difference in one attention output can flip an fp16 rounding or a 4-bit code downstream and
// two whole runs diverge chaotically. So the fused path is checked on the very same storage:
// this wrapper forwards every call to the format and, in attend(), also runs the reference on
// the same rows and records the largest difference (the model run continues on the fused
// output). Bound as in the synthetic test: 1e-4 of the largest |value| seen. HIGGS and KIVI
// run with small buffers (b=16, b=32) so that the decode steps attend over coded rows (HIGGS
// in its inner basis).
class CheckedCache final : public KvCache {
 public:
  explicit CheckedCache(std::unique_ptr<KvCache> c) : c_(std::move(c)) {}
  const KvShape& shape() const override { return c_->shape(); }
  std::string name() const override { return c_->name(); }
  int add_sequence() override { return c_->add_sequence(); }
  int n_seqs() const override { return c_->n_seqs(); }
  void clear(int seq) override { c_->clear(seq); }
  int64_t n_tokens(int seq) const override { return c_->n_tokens(seq); }
  void begin_step(int seq, int64_t n) override { c_->begin_step(seq, n); }
  void append(int layer, const float* k, const float* v) override {
    for (int64_t i = 0; i < step_rows(k) * shape().width(); ++i) vmax = std::max(vmax, double(std::fabs(v[i])));
    if (lut_g > 0) fmax = std::max(fmax, max_group_factor(k, step_rows(k) * shape().width(), lut_g));
    c_->append(layer, k, v);
  }
  void attend(int layer, const KvAttention& a) override {
    c_->attend(layer, a);
    const int64_t m = a.n * a.n_heads * shape().head_dim;
    std::vector<float> ref(static_cast<size_t>(m)), qq;
    KvAttention r = a;
    r.out = ref.data();
    if (qblock_step(spec, a, shape())) {
      qq = qblock_query(a, shape().head_dim, rotated_spec(spec));
      r.q = qq.data();
    }
    attend_reference(*c_, layer, r);
    // With byte tables on, what exceeds their bound (lut_output_bound) is what is checked.
    const double tables = lut_g > 0 && attend_lut_enabled()
                              ? lut_output_bound(lut_g, fmax, max_query_norm(a, shape().head_dim), vmax) : 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const double d = std::fabs(ref[size_t(i)] - a.out[i]);
      raw = std::max(raw, d);
      worst = std::max(worst, d - tables);
    }
    ++calls;
  }
  KvView read(int layer) override { return c_->read(layer); }
  void end_step() override { c_->end_step(); }
  int64_t live_bytes() const override { return c_->live_bytes(); }
  std::vector<KvBitsTerm> bits_report(int seq) const override { return c_->bits_report(seq); }
  int64_t step_n = 0;
  std::string spec;  // the format, for qblock_step
  int64_t lut_g = 0;  // lut_group(spec): keys scored by byte tables when they are on
  double worst = 0, raw = 0, vmax = 0, fmax = 0;
  int64_t calls = 0;

 private:
  int64_t step_rows(const float*) const { return step_n; }
  std::unique_ptr<KvCache> c_;
};

class KvAttendModel : public testing::RealModelTest {};

TEST_F(KvAttendModel, FusedAttentionMatchesReferenceOnTheSameStorage) {
  std::vector<int32_t> ids(104);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919 + 13) % size_t(V()));
  const bool lut_default = attend_lut_enabled();
  for (const char* spec : {"fp16", "f32", "q8_0", "q4_0", "q4_0r", "higgs2,b=16", "higgs4,b=16", "higgs:2x16,b=16", "kivi2,b=32"})
    for (const bool lut : {false, true}) {
    const int64_t lg = lut_group(spec, model_->kv_shape(256));
    if (lut && lg == 0) continue;
    set_attend_lut(lg > 0 ? lut : lut_default);
    Forward fwd(*model_, 2);
    CheckedCache cache(make_cache(spec, model_->kv_shape(256)));
    cache.spec = spec;
    cache.lut_g = lg;
    const int seq = cache.add_sequence();
    for (size_t i = 0; i < ids.size();) {
      const size_t m = i < 96 ? 32 : 1;  // prefill steps, then decode
      cache.step_n = int64_t(m);
      std::vector<float> logits(static_cast<size_t>(V()));
      fwd.eval(cache, seq, std::span<const int32_t>(ids.data() + i, m), logits.data(), false);
      i += m;
    }
    std::printf("%-8s fused vs reference attention on the model: max |d out| %.2e (|v| <= %.1f, %ld calls)%s\n",
                spec, cache.raw, cache.vmax, long(cache.calls),
                lut ? fmt::format("; byte tables on: {:.2e} beyond their bound", cache.worst).c_str() : "");
    EXPECT_EQ(cache.calls, 11 * model_->config().n_layers);
    EXPECT_LT(cache.worst, 1e-4 * cache.vmax) << spec << (lut ? " tables on" : "");
    }
  set_attend_lut(lut_default);
}

// Whole runs on the gemm strategy (f32 activations) with the f32 cache, where nothing re-rounds:
// fused vs reference path differ by f32 rounding only, as in test_forward.cpp's
// StepSizesAgreeTightly (observed ~7e-5; bound 1e-3).
struct NullObserver : KvAttentionObserver {
  void on_weights(int, int64_t, int64_t, int, std::span<const int32_t>, std::span<const float>) override {}
};

TEST_F(KvAttendModel, FusedLogitsMatchReferencePathF32) {
  std::vector<int32_t> ids(100);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919 + 13) % size_t(V()));
  NullObserver obs;
  ForwardOptions opt;
  opt.matmul = MatmulPath::kGemm;
  Forward fused(*model_, 2, opt);
  opt.observer = &obs;
  Forward ref(*model_, 2, opt);
  auto c1 = make_cache("f32", model_->kv_shape(256)), c2 = make_cache("f32", model_->kv_shape(256));
  const int s1 = c1->add_sequence(), s2 = c2->add_sequence();
  double worst = 0;
  for (const int64_t step : {32, 32, 32, 1, 1, 1, 1}) {
    const std::vector<int32_t> part(ids.begin(), ids.begin() + step);
    const auto a = testing::logits_in_steps(fused, *c1, s1, part, step);
    const auto b = testing::logits_in_steps(ref, *c2, s2, part, step);
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  }
  std::printf("f32 cache, gemm path: fused vs reference max |dlogit| %.2e\n", worst);
  EXPECT_LT(worst, 1e-3);
}

}  // namespace
}  // namespace aquakv
