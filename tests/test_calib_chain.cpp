// Tests of calib/fit_chain: on synthetic K/V with planted cross-layer maps the chain recovers
// them; its reconstructions equal the compressed cache's bit for bit (the predictors are fitted
// on exactly what the cache will see); the ablation switches drop predictors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/quant/channel_scaled_codec.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "test_codecs.h"

namespace aquakv {
namespace {

constexpr int kL = 3, kC = 12;

// K_l = K_{l-1} M_l + c_l + noise,  V_l = [K_l ; V_{l-1}] N_l + d_l + noise (fp16-rounded).
struct Planted {
  KvSamples s;
  std::vector<std::vector<double>> m, n, c, d;  // per layer
};

Planted planted(int64_t train, int64_t val, double noise, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> g(0, 1);
  Planted p;
  p.s.n_layers = kL;
  p.s.width = kC;
  p.s.n_train = train;
  p.s.n_val = val;
  const int64_t rows = train + val;
  p.s.k.assign(kL, std::vector<uint16_t>(size_t(rows * kC)));
  p.s.v.assign(kL, std::vector<uint16_t>(size_t(rows * kC)));
  p.m.resize(kL); p.n.resize(kL); p.c.resize(kL); p.d.resize(kL);
  for (int l = 1; l < kL; ++l) {
    p.m[l].resize(kC * kC); p.n[l].resize(2 * kC * kC); p.c[l].resize(kC); p.d[l].resize(kC);
    // Near-identity blocks keep the inputs well conditioned (smallest variance ~0.3).
    for (int i = 0; i < kC * kC; ++i) p.m[l][i] = 0.8 * (i % (kC + 1) == 0) + 0.2 * g(rng) / std::sqrt(kC);
    for (int i = 0; i < 2 * kC * kC; ++i) p.n[l][i] = 0.5 * ((i % (kC * kC)) % (kC + 1) == 0) + 0.2 * g(rng) / std::sqrt(kC);
    for (auto& e : p.c[l]) e = g(rng) * 0.3;
    for (auto& e : p.d[l]) e = g(rng) * 0.3;
  }
  std::vector<double> k(kC), v(kC), kn(kC), vn(kC);
  for (int64_t t = 0; t < rows; ++t) {
    for (int j = 0; j < kC; ++j) { k[j] = g(rng); v[j] = g(rng); }
    for (int l = 0; l < kL; ++l) {
      if (l > 0) {
        for (int j = 0; j < kC; ++j) {
          double a = p.c[l][j];
          for (int i = 0; i < kC; ++i) a += k[i] * p.m[l][i * kC + j];
          kn[j] = a + noise * g(rng);
        }
        for (int j = 0; j < kC; ++j) {
          double a = p.d[l][j];
          for (int i = 0; i < kC; ++i) a += kn[i] * p.n[l][i * kC + j] + v[i] * p.n[l][(kC + i) * kC + j];
          vn[j] = a + noise * g(rng);
        }
        k = kn;
        v = vn;
      }
      for (int j = 0; j < kC; ++j) {
        p.s.k[l][size_t(t * kC + j)] = fp32_to_fp16(float(k[j]));
        p.s.v[l][size_t(t * kC + j)] = fp32_to_fp16(float(v[j]));
      }
    }
  }
  return p;
}

TEST(FitChain, RecoversPlantedCrossLayerMaps) {
  const double noise = 0.02;
  const Planted p = planted(6000, 1000, noise, 1);
  ChainOptions o;
  o.key_codec = o.value_codec = o.layer0_codec = std::make_shared<HalfCodec>(kC);
  o.damping = 0;
  std::vector<LayerFitStats> st;
  int calls = 0;
  const auto maps = fit_chain(p.s, o, &st, [&](int done, int total) { ++calls; EXPECT_EQ(total, kL); EXPECT_EQ(done, calls); });
  EXPECT_EQ(calls, kL);
  ASSERT_EQ(st.size(), size_t(kL));
  EXPECT_TRUE(maps[0].key.empty());
  EXPECT_TRUE(maps[0].value.empty());
  for (int l = 1; l < kL; ++l) {
    // Noise 0.02 (fp16 rounding, ~3e-4, is far below it) bounds the coefficient error: with
    // n = 6000 rows and input variances >= ~0.3 its std is <= 0.02 / sqrt(0.3 * 6000) = 4.7e-4;
    // allow ~6 std over the 432 coefficients.
    double worst = 0;
    for (int i = 0; i < kC * kC; ++i) worst = std::max(worst, std::abs(maps[l].key.w[i] - p.m[l][i]));
    for (int i = 0; i < 2 * kC * kC; ++i) worst = std::max(worst, std::abs(maps[l].value.w[i] - p.n[l][i]));
    EXPECT_LT(worst, 3e-3) << "layer " << l;
    // Prediction error ~ noise^2 / var(Y): well below 1e-2, and validation ~ train.
    EXPECT_LT(st[l].k_val, 1e-2);
    EXPECT_LT(st[l].v_val, 1e-2);
    EXPECT_NEAR(st[l].k_val, st[l].k_train, 0.3 * st[l].k_train);
    EXPECT_GT(st[l].k_val, 0.0);
  }
  EXPECT_EQ(st[0].k_val, 1.0);  // layer 0: no predictor
}

// With `plan`, layer 1 codes keys and values with other codecs than layer 2 (a bit plan); with
// `wide_k` / `wide_v`, that stream's predictors read the wide inputs (key 2C, value 3C); key_rank /
// value_rank: the streams' ranks (-1: full, ChainOptions' default rank 0).
void check_chain_equals_cache(bool plan, bool wide_k = false, bool wide_v = false, int64_t key_rank = -1,
                              int64_t value_rank = -1) {
  const Planted p = planted(300, 60, 0.05, 2);
  auto kq = std::make_shared<CoarseCodec>(kC, 3);
  auto vq = std::make_shared<CoarseCodec>(kC, 2);
  auto l0 = std::make_shared<CoarseCodec>(kC, 5);
  ChainOptions o;
  o.key_codec = kq;
  o.value_codec = vq;
  o.layer0_codec = l0;
  if (plan) {
    o.layer_key_codecs = {nullptr, std::make_shared<CoarseCodec>(kC, 6), nullptr};
    o.layer_value_codecs = {nullptr, std::make_shared<CoarseCodec>(kC, 4), std::make_shared<CoarseCodec>(kC, 7)};
  }
  o.wide_keys = wide_k;
  o.wide_values = wide_v;
  o.key_rank = key_rank;
  o.value_rank = value_rank;
  std::vector<std::vector<float>> ck(kL), cv(kL);
  o.on_layer = [&](int l, const std::vector<float>& k, const std::vector<float>& v) { ck[l] = k; cv[l] = v; };
  auto a = std::make_shared<Adapters>();
  a->model = {"t", kL, 1, kC, kC, 0};
  a->layers = fit_chain(p.s, o, nullptr);
  for (int l = 1; l < kL; ++l) {
    EXPECT_EQ(a->layers[size_t(l)].key.in, (wide_k ? 2 : 1) * kC);
    EXPECT_EQ(a->layers[size_t(l)].value.in, (wide_v ? 3 : 2) * kC);
    EXPECT_EQ(a->layers[size_t(l)].key.rank, std::max<int64_t>(key_rank, 0));
    EXPECT_EQ(a->layers[size_t(l)].value.rank, std::max<int64_t>(value_rank, 0));
  }
  EXPECT_EQ(a->has_wide_inputs(), wide_k || wide_v);
  // Feed all rows as one sequence with no sinks, compressing at every step of 37 tokens.
  KvShape shape;
  shape.n_layers = kL;
  shape.n_kv_heads = 1;
  shape.head_dim = kC;
  shape.max_tokens = 1000;
  CompressedCacheOptions co;
  co.name = "t";
  co.sinks = 0;
  co.buffer = 1;
  co.key_codec = kq;
  co.value_codec = vq;
  co.layer0_key_codec = co.layer0_value_codec = l0;
  co.layer_key_codecs = o.layer_key_codecs;
  co.layer_value_codecs = o.layer_value_codecs;
  co.adapters = a;
  auto cache = make_compressed_cache(shape, co);
  const int seq = cache->add_sequence();
  const int64_t rows = p.s.rows();
  std::vector<float> k, v;
  for (int64_t t0 = 0; t0 < rows; t0 += 37) {
    const int64_t n = std::min<int64_t>(37, rows - t0);
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      k.resize(size_t(n * kC));
      v.resize(size_t(n * kC));
      for (int64_t i = 0; i < n * kC; ++i) {
        k[size_t(i)] = fp16_to_fp32(p.s.k[l][size_t(t0 * kC + i)]);
        v[size_t(i)] = fp16_to_fp32(p.s.v[l][size_t(t0 * kC + i)]);
      }
      cache->append(l, k.data(), v.data());
      cache->read(l);
    }
    cache->end_step();
  }
  // One more step reads everything back compressed.
  cache->begin_step(seq, 0);
  for (int l = 0; l < kL; ++l) {
    cache->append(l, nullptr, nullptr);
    const KvView view = cache->read(l);
    ASSERT_EQ(view.n_tokens, rows);
    EXPECT_EQ(std::memcmp(view.k, ck[l].data(), size_t(rows * kC * 4)), 0) << "keys, layer " << l;
    EXPECT_EQ(std::memcmp(view.v, cv[l].data(), size_t(rows * kC * 4)), 0) << "values, layer " << l;
  }
  cache->end_step();
}

TEST(FitChain, ReconstructionsEqualTheCachesBitForBit) { check_chain_equals_cache(false); }
TEST(FitChain, WideInputsReconstructLikeTheCache) { check_chain_equals_cache(false, true, true); }
// One stream wide and reduced-rank maps of different ranks per stream (the equal-cost variants
// of `calibrate --predictor-inputs wide-keys --key-rank R`): the cache reads each map by its own
// input width and rank.
TEST(FitChain, PerStreamInputsAndRanksReconstructLikeTheCache) {
  check_chain_equals_cache(false, true, false, 3, -1);
  check_chain_equals_cache(true, false, true, -1, 5);
}

// The wrapper codes x * s and decodes / s: with a lossless inner codec and power-of-two scales
// the round trip is exact, and the inner codec sees the scaled rows.
TEST(FitChain, ChannelScaledCodecScalesThenUnscales) {
  auto half = std::make_shared<HalfCodec>(4);
  const ChannelScaledCodec c(half, {0.5f, 2.0f, 4.0f, 1.0f});
  EXPECT_EQ(c.spec(), half->spec() + "+chscale");
  EXPECT_EQ(c.encoded_bytes(3), half->encoded_bytes(3));
  const float x[8] = {1.5f, -2.25f, 0.125f, 3.0f, -7.0f, 0.0f, 1024.0f, -0.5f};
  std::vector<uint8_t> codes(size_t(c.encoded_bytes(2)));
  float y[8], inner[8];
  c.encode(x, 2, codes.data());
  c.decode(codes.data(), 2, y);
  half->decode(codes.data(), 2, inner);
  const float s[4] = {0.5f, 2.0f, 4.0f, 1.0f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(y[i], x[i]) << i;
    EXPECT_EQ(inner[i], x[i] * s[i % 4]) << i;
  }
  EXPECT_THROW(ChannelScaledCodec(half, {1.0f, 1.0f, 1.0f}), Error);
  EXPECT_THROW(ChannelScaledCodec(half, {1.0f, -1.0f, 1.0f, 1.0f}), Error);
}

// Channel scales: the chain's scales follow s_c^2 ~ sqrt(w_c) / sigma_c (geometric mean 1),
// computed here in double from the planted data, and the cache given the same scales
// reconstructs bit for bit like the chain.
TEST(FitChain, ChannelScalesFollowTheFormula) {
  Planted p = planted(300, 60, 0.05, 4);
  p.s.q2.assign(kL, std::vector<double>(kC));
  p.s.q_rows = 10;
  for (int l = 0; l < kL; ++l)
    for (int c = 0; c < kC; ++c) p.s.q2[size_t(l)][size_t(c)] = 10.0 * (1 + c % 5);
  ChainOptions o;
  o.key_codec = o.value_codec = std::make_shared<CoarseCodec>(kC, 3);
  o.layer0_codec = std::make_shared<CoarseCodec>(kC, 5);
  o.scale_keys = o.scale_values = true;
  std::vector<float> pk1, k0;
  std::vector<std::vector<float>> ck(kL), cv(kL);
  o.on_residual = [&](int l, bool key, const std::vector<float>&, const std::vector<float>& pred) { if (l == 1 && key) pk1 = pred; };
  o.on_layer = [&](int l, const std::vector<float>& k, const std::vector<float>& v) { ck[l] = k; cv[l] = v; };
  const auto maps = fit_chain(p.s, o, nullptr);
  ASSERT_EQ(maps[1].key_scale.size(), size_t(kC));
  ASSERT_EQ(maps[2].value_scale.size(), size_t(kC));
  EXPECT_TRUE(maps[0].key_scale.empty());
  // Reference for layer 1's key scales.
  std::vector<double> ref(kC);
  double mean_log = 0;
  for (int c = 0; c < kC; ++c) {
    double ms = 0;
    for (int64_t r = 0; r < p.s.n_train; ++r) {
      const double e = double(fp16_to_fp32(p.s.k[1][size_t(r * kC + c)])) - pk1[size_t(r * kC + c)];
      ms += e * e / double(p.s.n_train);
    }
    ref[size_t(c)] = 0.25 * std::log(1.0 + c % 5) - 0.25 * std::log(ms);  // log of (sqrt(w)/sigma)^(1/2), w up to a constant
    mean_log += ref[size_t(c)] / kC;
  }
  for (int c = 0; c < kC; ++c) EXPECT_NEAR(maps[1].key_scale[size_t(c)], std::exp(ref[size_t(c)] - mean_log), 1e-5) << c;
  // The cache with these scales equals the chain.
  auto a = std::make_shared<Adapters>();
  a->model = {"t", kL, 1, kC, kC, 0};
  a->layers = maps;
  KvShape shape;
  shape.n_layers = kL;
  shape.n_kv_heads = 1;
  shape.head_dim = kC;
  shape.max_tokens = 1000;
  CompressedCacheOptions co;
  co.name = "t";
  co.sinks = 0;
  co.buffer = 1;
  co.key_codec = co.value_codec = o.key_codec;
  co.layer0_key_codec = co.layer0_value_codec = o.layer0_codec;
  co.layer_key_codecs.assign(kL, nullptr);
  co.layer_value_codecs.assign(kL, nullptr);
  for (int l = 1; l < kL; ++l) {
    co.layer_key_codecs[size_t(l)] = std::make_shared<ChannelScaledCodec>(o.key_codec, maps[size_t(l)].key_scale);
    co.layer_value_codecs[size_t(l)] = std::make_shared<ChannelScaledCodec>(o.value_codec, maps[size_t(l)].value_scale);
  }
  co.adapters = a;
  auto cache = make_compressed_cache(shape, co);
  const int seq = cache->add_sequence();
  const int64_t rows = p.s.rows();
  std::vector<float> k(size_t(rows * kC)), v(size_t(rows * kC));
  cache->begin_step(seq, rows);
  for (int l = 0; l < kL; ++l) {
    for (int64_t i = 0; i < rows * kC; ++i) {
      k[size_t(i)] = fp16_to_fp32(p.s.k[l][size_t(i)]);
      v[size_t(i)] = fp16_to_fp32(p.s.v[l][size_t(i)]);
    }
    cache->append(l, k.data(), v.data());
    cache->read(l);
  }
  cache->end_step();
  cache->begin_step(seq, 0);
  for (int l = 0; l < kL; ++l) {
    cache->append(l, nullptr, nullptr);
    const KvView view = cache->read(l);
    EXPECT_EQ(std::memcmp(view.k, ck[l].data(), size_t(rows * kC * 4)), 0) << "keys, layer " << l;
    EXPECT_EQ(std::memcmp(view.v, cv[l].data(), size_t(rows * kC * 4)), 0) << "values, layer " << l;
  }
  cache->end_step();
}

TEST(FitChain, PlannedCodecsReconstructLikeTheCache) {
  check_chain_equals_cache(true);
  // The plan changes the reconstruction (else the test above could not tell the codecs apart).
  const Planted p = planted(300, 60, 0.05, 2);
  std::vector<float> plain, planned;
  for (bool plan : {false, true}) {
    ChainOptions o;
    o.key_codec = std::make_shared<CoarseCodec>(kC, 3);
    o.value_codec = std::make_shared<CoarseCodec>(kC, 2);
    o.layer0_codec = std::make_shared<CoarseCodec>(kC, 5);
    if (plan) o.layer_key_codecs = {nullptr, std::make_shared<CoarseCodec>(kC, 6), nullptr};
    std::vector<LayerFitStats> st;
    o.on_layer = [&](int l, const std::vector<float>& k, const std::vector<float>&) { if (l == 1) (plan ? planned : plain) = k; };
    fit_chain(p.s, o, &st);
    EXPECT_EQ(st[1].k_codec, plan ? "test-coarse6b1" : "test-coarse3b1");
    EXPECT_EQ(st[2].k_codec, "test-coarse3b1");
  }
  EXPECT_NE(plain, planned);
}

TEST(FitChain, AblationSwitchesDropPredictors) {
  const Planted p = planted(500, 100, 0.05, 3);
  ChainOptions o;
  o.key_codec = o.value_codec = o.layer0_codec = std::make_shared<CoarseCodec>(kC, 4);
  o.fit_values = false;
  std::vector<LayerFitStats> st;
  auto maps = fit_chain(p.s, o, &st);
  for (int l = 1; l < kL; ++l) {
    EXPECT_FALSE(maps[l].key.empty());
    EXPECT_TRUE(maps[l].value.empty());
    EXPECT_EQ(st[l].v_val, 1.0);
  }
  o.fit_values = true;
  o.fit_keys = false;
  o.rank = 2;
  maps = fit_chain(p.s, o, &st);
  for (int l = 1; l < kL; ++l) {
    EXPECT_TRUE(maps[l].key.empty());
    EXPECT_EQ(maps[l].value.rank, 2);
  }
  o.rank = kC + 1;
  EXPECT_THROW(fit_chain(p.s, o, &st), Error);
}

}  // namespace
}  // namespace aquakv
