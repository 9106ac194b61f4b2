// Tests of KVQuant and Coupled Quantization (quant/kvquant_codec.h, quant/cq_codec.h,
// calib/kvquant_fit.h, calib/cq_fit.h, kv/quant_tables.h, kv/layered_cache.h): the codecs
// against float64 references of their rules (KVQuant: outliers exact to fp16, every other value
// at its nearest centroid; CQ: every group at its nearest codeword), bits accounting, refusals
// of bad parameters and bad files, k-means optimality (Lloyd fixed points), and the per-layer
// cache against the one-codec stack.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "aquakv/calib/cq_fit.h"
#include "aquakv/calib/kvquant_fit.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/quant_tables.h"
#include "aquakv/kv/layered_cache.h"
#include "aquakv/kv/session_file.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/cq_codec.h"
#include "aquakv/quant/kvquant_codec.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

constexpr int64_t kC = 192;

std::vector<float> randn(int64_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, sd);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& e : x) e = g(rng);
  return x;
}

std::vector<float> centroids(int bits, uint32_t seed) {
  auto c = randn(int64_t(1) << bits, seed, 0.6f);
  std::sort(c.begin(), c.end());
  return c;
}

KvQuantParams key_params(int bits, int64_t k) {
  KvQuantParams p;
  p.bits = bits;
  p.per_channel = true;
  p.centroids = centroids(bits, 7 + uint32_t(bits));
  p.offset = randn(kC, 3, 0.5f);
  p.scale = randn(kC, 4);
  for (auto& s : p.scale) s = 0.5f + std::fabs(s);
  p.outliers_per_row = k;
  return p;
}

KvQuantParams value_params(int bits, int64_t k) {
  KvQuantParams p;
  p.bits = bits;
  p.centroids = centroids(bits, 17 + uint32_t(bits));
  p.outliers_per_row = k;
  return p;
}

// Float64 reference of the codec's rule on one row: the decoded value of every channel.
std::vector<double> reference(const KvQuantParams& p, const float* x) {
  std::vector<double> dev(kC);
  double mean = 0;
  for (int64_t c = 0; c < kC; ++c) mean += x[c];
  mean /= kC;
  for (int64_t c = 0; c < kC; ++c)
    dev[size_t(c)] = p.per_channel ? std::fabs((double(x[c]) - p.offset[size_t(c)]) / p.scale[size_t(c)])
                                   : std::fabs(double(x[c]) - mean);
  std::vector<int> idx(kC);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return dev[size_t(a)] > dev[size_t(b)]; });
  std::vector<bool> out(kC, false);
  for (int64_t i = 0; i < p.outliers_per_row; ++i) out[size_t(idx[size_t(i)])] = true;
  double o = 0, s = 1;
  if (!p.per_channel) {
    double mn = INFINITY, mx = -INFINITY;
    for (int64_t c = 0; c < kC; ++c)
      if (!out[size_t(c)]) { mn = std::min(mn, double(x[c])); mx = std::max(mx, double(x[c])); }
    o = fp16_to_fp32(fp32_to_fp16(float(0.5 * (mx + mn))));
    s = fp16_to_fp32(fp32_to_fp16(float(0.5 * (mx - mn))));
  }
  std::vector<double> y(kC);
  for (int64_t c = 0; c < kC; ++c) {
    if (out[size_t(c)]) { y[size_t(c)] = fp16_to_fp32(fp32_to_fp16(x[c])); continue; }
    const double oc = p.per_channel ? p.offset[size_t(c)] : o, sc = p.per_channel ? p.scale[size_t(c)] : s;
    const double uc = (double(x[c]) - oc) / sc;
    double best = INFINITY, cj = 0;
    for (float cen : p.centroids)
      if (std::fabs(uc - cen) < best) { best = std::fabs(uc - cen); cj = cen; }
    y[size_t(c)] = cj * sc + oc;
  }
  return y;
}

void check_against_reference(const KvQuantParams& p, uint32_t seed) {
  const KvQuantCodec codec("test", kC, p);
  const int64_t rows = 40;
  auto x = randn(rows * kC, seed);
  for (int64_t r = 0; r < rows; ++r) x[size_t(r * kC + (r * 7) % kC)] *= 25.0f;  // one outlier per row
  std::vector<uint8_t> b(size_t(codec.encoded_bytes(rows)));
  std::vector<float> y(x.size());
  codec.encode(x.data(), rows, b.data());
  codec.decode(b.data(), rows, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    const auto want = reference(p, x.data() + r * kC);
    for (int64_t c = 0; c < kC; ++c)
      ASSERT_NEAR(y[size_t(r * kC + c)], want[size_t(c)], 1e-5 * (1 + std::fabs(want[size_t(c)])))
          << (p.per_channel ? "keys" : "values") << " bits " << p.bits << " row " << r << " ch " << c;
  }
}

TEST(KvQuantCodec, MatchesFloat64ReferenceOfItsRule) {
  for (int bits : {2, 3, 4}) {
    for (int64_t k : {0, 2, 5}) {
      check_against_reference(key_params(bits, k), 100 + uint32_t(bits * 10 + k));
      check_against_reference(value_params(bits, k), 200 + uint32_t(bits * 10 + k));
    }
  }
}

TEST(KvQuantCodec, BitsCountEveryByte) {
  // keys: b bits + k x (1-byte index + fp16) per row; values: + fp16 offset and scale.
  const KvQuantCodec k3("k", kC, key_params(3, 2)), v3("v", kC, value_params(3, 2));
  EXPECT_DOUBLE_EQ(k3.bits_per_value(), 3.0 + 2 * 24.0 / kC);
  EXPECT_DOUBLE_EQ(v3.bits_per_value(), 3.0 + (32.0 + 2 * 24.0) / kC);
  EXPECT_EQ(KvQuantCodec::row_bytes(512, 2, true, 5), 5 * 4 + 128);  // 2-byte indices past 256
}

TEST(KvQuantCodec, RefusesBadParameters) {
  auto bad = [](KvQuantParams p, const char* what) {
    EXPECT_THROW(KvQuantCodec("bad", kC, p), Error) << what;
  };
  auto p = key_params(3, 2);
  p.bits = 0; bad(p, "bits 0");
  p = key_params(3, 2); p.centroids.pop_back(); bad(p, "7 centroids");
  p = key_params(3, 2); std::swap(p.centroids[0], p.centroids[1]); bad(p, "order");
  p = key_params(3, 2); p.centroids[3] = NAN; bad(p, "NaN centroid");
  p = key_params(3, 2); p.scale[5] = 0; bad(p, "scale 0");
  p = key_params(3, 2); p.offset.pop_back(); bad(p, "offset size");
  p = key_params(3, kC); bad(p, "k = C");
  auto v = value_params(3, 2); v.offset.assign(kC, 0.0f); bad(v, "per-token with offsets");
}

TEST(KvQuantCodec, NonFiniteInputDoesNotCrash) {
  const KvQuantCodec kc("k", kC, key_params(2, 2)), vc("v", kC, value_params(2, 2));
  auto x = randn(kC, 5);
  x[3] = NAN;
  x[9] = INFINITY;
  std::vector<uint8_t> b(size_t(kc.block_bytes() + vc.block_bytes()));
  std::vector<float> y(kC);
  kc.encode(x.data(), 1, b.data());
  kc.decode(b.data(), 1, y.data());
  vc.encode(x.data(), 1, b.data());
  vc.decode(b.data(), 1, y.data());
}

double objective(const std::vector<float>& v, const std::vector<float>& c) {
  double e = 0;
  for (float x : v) {
    double best = INFINITY;
    for (float m : c) best = std::min(best, (double(x) - m) * (double(x) - m));
    e += best;
  }
  return e;
}

TEST(KvQuantFit, KMeans1dIsALloydFixedPoint) {
  auto v = randn(5000, 9);
  for (size_t i = 0; i < v.size(); i += 3) v[i] = v[i] * 0.1f + 2.0f;  // a second mode
  std::sort(v.begin(), v.end());
  for (int k : {4, 8, 16}) {
    const auto c = kmeans_1d(v, k, 200);
    ASSERT_EQ(int(c.size()), k);
    for (int i = 1; i < k; ++i) ASSERT_GT(c[size_t(i)], c[size_t(i - 1)]);
    // Each centroid is the mean of the values nearest to it (float64, independent of the code).
    std::vector<double> sum(static_cast<size_t>(k), 0.0), cnt(static_cast<size_t>(k), 0.0);
    for (float x : v) {
      int best = 0;
      for (int i = 1; i < k; ++i)
        if (std::fabs(double(x) - c[size_t(i)]) < std::fabs(double(x) - c[size_t(best)])) best = i;
      sum[size_t(best)] += x;
      cnt[size_t(best)] += 1;
    }
    for (int i = 0; i < k; ++i)
      if (cnt[size_t(i)] > 0) {
        EXPECT_NEAR(c[size_t(i)], sum[size_t(i)] / cnt[size_t(i)], 1e-4) << k << " " << i;
      }
    // Better than the quantile start and than a uniform grid over the range.
    std::vector<float> q(static_cast<size_t>(k)), g(static_cast<size_t>(k));
    for (int i = 0; i < k; ++i) {
      q[size_t(i)] = v[size_t((i + 0.5) / k * double(v.size()))];
      g[size_t(i)] = v.front() + (v.back() - v.front()) * float(i + 0.5) / float(k);
    }
    EXPECT_LE(objective(v, c), objective(v, q) * (1 + 1e-9));
    EXPECT_LT(objective(v, c), objective(v, g));
  }
  // Fewer distinct values than centroids: still strictly increasing.
  const auto c = kmeans_1d({1.0f, 1.0f, 2.0f}, 4, 10);
  for (int i = 1; i < 4; ++i) EXPECT_GT(c[size_t(i)], c[size_t(i - 1)]);
}

// Weighted objective sum w(x) (x - c(x))^2, float64.
double wobjective(const std::vector<float>& v, const std::vector<float>& w, const std::vector<float>& c) {
  double e = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    double best = INFINITY;
    for (float m : c) best = std::min(best, (double(v[i]) - m) * (double(v[i]) - m));
    e += double(w[i]) * best;
  }
  return e;
}

TEST(KvQuantFit, WeightedKMeans1dIsAWeightedLloydFixedPoint) {
  auto v = randn(6000, 19);
  std::sort(v.begin(), v.end());
  // Weights: the positive half weighs 50x the negative half, a band around -1 weighs nothing.
  std::vector<float> w(v.size());
  for (size_t i = 0; i < v.size(); ++i) w[i] = v[i] > 0 ? 50.0f : (std::fabs(v[i] + 1) < 0.2f ? 0.0f : 1.0f);
  for (int k : {4, 8}) {
    const auto c = kmeans_1d(v, k, 300, &w);
    const auto cu = kmeans_1d(v, k, 300);
    ASSERT_EQ(int(c.size()), k);
    for (int i = 1; i < k; ++i) ASSERT_GT(c[size_t(i)], c[size_t(i - 1)]);
    // Each centroid is the weighted mean of the values nearest to it (float64 reference).
    std::vector<double> sum(static_cast<size_t>(k), 0.0), wsum(static_cast<size_t>(k), 0.0);
    for (size_t j = 0; j < v.size(); ++j) {
      int best = 0;
      for (int i = 1; i < k; ++i)
        if (std::fabs(double(v[j]) - c[size_t(i)]) < std::fabs(double(v[j]) - c[size_t(best)])) best = i;
      sum[size_t(best)] += double(w[j]) * v[j];
      wsum[size_t(best)] += w[j];
    }
    for (int i = 0; i < k; ++i) {
      if (wsum[size_t(i)] > 0) {
        EXPECT_NEAR(c[size_t(i)], sum[size_t(i)] / wsum[size_t(i)], 1e-4) << k << " " << i;
      }
    }
    // The weights move centroids to the heavy half and lower the weighted objective.
    const auto positive = [](const std::vector<float>& cc) { return std::count_if(cc.begin(), cc.end(), [](float x) { return x > 0; }); };
    EXPECT_GT(positive(c), positive(cu)) << k;
    EXPECT_LT(wobjective(v, w, c), wobjective(v, w, cu)) << k;
  }
  // Equal weights: exactly the unweighted fit.
  const std::vector<float> ones(v.size(), 3.0f);
  EXPECT_EQ(kmeans_1d(v, 8, 300, &ones), kmeans_1d(v, 8, 300));
}

KvSamples samples(int64_t L, int64_t rows, uint32_t seed) {
  KvSamples s;
  s.n_layers = L;
  s.width = kC;
  s.n_train = rows - rows / 8;
  s.n_val = rows / 8;
  for (int64_t l = 0; l < L; ++l) {
    auto k = randn(rows * kC, seed + uint32_t(l)), v = randn(rows * kC, seed + 100 + uint32_t(l));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < kC; ++c) k[size_t(r * kC + c)] = k[size_t(r * kC + c)] * (1 + c % 5) + float(c % 3);
    std::vector<uint16_t> hk(k.size()), hv(v.size());
    for (size_t i = 0; i < k.size(); ++i) { hk[i] = fp32_to_fp16(k[i]); hv[i] = fp32_to_fp16(v[i]); }
    s.k.push_back(hk);
    s.v.push_back(hv);
  }
  return s;
}

TEST(KvQuantFit, TablesFromSamples) {
  const auto s = samples(2, 1600, 1);
  std::vector<KvQuantLayerStats> st;
  KvQuantFitOptions o;
  o.bits = 3;
  const auto t = fit_kvquant(s, o, &st);
  EXPECT_EQ(t.outliers_per_row, 2);  // ceil(1% of 192)
  ASSERT_EQ(t.layers.size(), 2u);
  // Channel c of the keys is N(c % 3, (1 + c % 5)^2): offset ~ mean, scale ~ 2.576 sd (the 0.5%
  // and 99.5% quantiles of 1400 train rows: each end estimated to ~0.13 sd).
  for (int64_t c = 0; c < kC; ++c) {
    EXPECT_NEAR(t.layers[0].key_offset[size_t(c)], c % 3, 0.4 * (1 + c % 5)) << c;  // ~4 sd of the estimate
    EXPECT_NEAR(t.layers[0].key_scale[size_t(c)] / (1 + c % 5), 2.576, 0.45) << c;
  }
  // 3-bit Lloyd-Max on a Gaussian: relative MSE ~0.035 of the normalized signal; a loose bound.
  for (const auto& l : st) {
    EXPECT_LT(l.key_rel_mse, 0.08);
    EXPECT_LT(l.value_rel_mse, 0.08);
    EXPECT_GT(l.key_rel_mse, 0.0);
  }
  KvQuantFitOptions bad = o;
  bad.bits = 9;
  EXPECT_THROW(fit_kvquant(s, bad), Error);
}

// The uniform datatype (the int-vs-nuq ablation): the same normalization, levels evenly spaced
// on [-1, 1]. On Gaussian data the evenly spaced 3-bit levels over +-2.6 sd (step 0.74 sd, MSE
// ~ step^2 / 12 = 0.045 sd^2 before clipping) lose to the Lloyd-Max levels (~0.035).
TEST(KvQuantFit, UniformDatatypeKeepsTheNormalizationAndLosesToKMeans) {
  const auto s = samples(2, 1600, 1);
  KvQuantFitOptions o;
  o.bits = 3;
  std::vector<KvQuantLayerStats> km, un;
  const auto t = fit_kvquant(s, o, &km);
  o.uniform = true;
  const auto u = fit_kvquant(s, o, &un);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(u.layers[l].key_offset, t.layers[l].key_offset);
    EXPECT_EQ(u.layers[l].key_scale, t.layers[l].key_scale);
    ASSERT_EQ(u.layers[l].key_centroids.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      EXPECT_FLOAT_EQ(u.layers[l].key_centroids[size_t(i)], float(-1.0 + 2.0 * i / 7.0)) << i;
      EXPECT_FLOAT_EQ(u.layers[l].value_centroids[size_t(i)], float(-1.0 + 2.0 * i / 7.0)) << i;
    }
    EXPECT_GT(un[l].key_rel_mse, km[l].key_rel_mse * 1.1) << l;
    EXPECT_GT(un[l].value_rel_mse, km[l].value_rel_mse * 1.1) << l;
    EXPECT_LT(un[l].key_rel_mse, 0.1) << l;
  }
  o.fisher = true;
  EXPECT_THROW(fit_kvquant(s, o), Error);  // nothing to weigh
  EXPECT_EQ(uniform_levels(2), (std::vector<float>{-1.0f, 1.0f}));
}

TEST(KvQuantFit, FisherWeightsChangeTheDatatypes) {
  auto s = samples(2, 1600, 1);
  KvQuantFitOptions o;
  o.bits = 3;
  o.fisher = true;
  EXPECT_THROW(fit_kvquant(s, o), Error);  // no Fisher information in the samples
  // Fisher rows for the first 800 training rows (windows of 100): heavy where the key or
  // value is positive.
  s.rows_per_window = 100;
  for (int64_t l = 0; l < 2; ++l) {
    s.fk.emplace_back(size_t(800 * kC));
    s.fv.emplace_back(size_t(800 * kC));
    for (size_t i = 0; i < s.fk.back().size(); ++i) {
      s.fk.back()[i] = fp16_to_fp32(s.k[size_t(l)][i]) > float(i % kC % 3) ? 20.0f : 1.0f;
      s.fv.back()[i] = fp16_to_fp32(s.v[size_t(l)][i]) > 0 ? 20.0f : 1.0f;
    }
  }
  ASSERT_EQ(s.fisher_rows(), 800);
  std::vector<KvQuantLayerStats> st;
  const auto t = fit_kvquant(s, o, &st);
  o.fisher = false;
  const auto u = fit_kvquant(s, o);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(t.layers[l].key_offset, u.layers[l].key_offset);  // ranges: all training rows either way
    // The weighted datatypes lean to the heavy (positive) side.
    double mt = 0, mu = 0;
    for (int i = 0; i < 8; ++i) { mt += t.layers[l].value_centroids[size_t(i)]; mu += u.layers[l].value_centroids[size_t(i)]; }
    EXPECT_GT(mt, mu + 0.1) << l;
    EXPECT_LT(st[l].value_rel_mse, 0.12);
  }
}

KvShape shape(int L) {
  KvShape s;
  s.n_layers = L;
  s.n_kv_heads = 3;
  s.head_dim = 64;
  s.max_tokens = 1024;
  s.rope.n_rot = 64;
  return s;
}

std::string temp(const std::string& name) { return testing::TempDir() + "/aquakv_kvq_" + name; }

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void spit(const std::string& p, const std::string& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), std::streamsize(b.size()));
}

QuantTables tables(int L) {
  KvQuantFitOptions o;
  o.bits = 2;
  auto t = fit_kvquant(samples(L, 300, 5), o);
  t.model = {"llama", L, 3, 64, kC, 0x1234};
  t.notes = "{}";
  return t;
}

QuantTables cq_tables(int L, int64_t c) {
  CqFitOptions o;
  o.channels = c;
  o.bits = 6;
  auto t = fit_cq(samples(L, 300, 6), o);
  t.model = {"llama", L, 3, 64, kC, 0x1234};
  return t;
}

TEST(QuantTables, RoundTripAndRefusals) {
  const auto t = tables(2);
  const std::string p = temp("t.kvq");
  save_quant_tables(t, p);
  const auto u = load_quant_tables(p);
  EXPECT_EQ(u.bits, t.bits);
  EXPECT_EQ(u.outliers_per_row, t.outliers_per_row);
  EXPECT_EQ(u.model.meta_hash, t.model.meta_hash);
  EXPECT_EQ(u.notes, t.notes);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_EQ(u.layers[l].key_centroids, t.layers[l].key_centroids);
    EXPECT_EQ(u.layers[l].key_scale, t.layers[l].key_scale);
    EXPECT_EQ(u.layers[l].value_centroids, t.layers[l].value_centroids);
  }
  const std::string good = slurp(p);
  auto refused = [&](std::string bytes, const char* want, const char* what) {
    const std::string q = temp("bad.kvq");
    spit(q, bytes);
    try {
      load_quant_tables(q);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(q), std::string::npos) << e.what();
    }
  };
  std::string b = good;
  b[b.size() / 2] ^= 0x10;
  refused(b, "checksum", "flipped byte");
  refused(good.substr(0, good.size() - 9), "header says", "truncated");
  refused(good.substr(0, 10), "truncated", "cut in the header");
  b = good;
  b[0] = 'X';
  refused(b, "magic", "magic");
  b = good;
  b[8] = 7;
  refused(b, "version 7", "version");
  refused("", "truncated", "empty");
  // A table that fails the codec's checks is refused at save (and would be at load).
  auto t2 = t;
  t2.layers[1].key_scale[0] = -1;
  EXPECT_THROW(save_quant_tables(t2, temp("neg.kvq")), Error);
}

// The seed corpus is written by scripts/make_quant_tables_seeds.py from the documented layout,
// independently of the C++ writer: its two intact files parse, and saving them again gives the
// same bytes; its damaged files are refused.
TEST(QuantTables, IndependentWriterAgrees) {
  const std::string dir = std::string(AQUAKV_TEST_DATA) + "/../../fuzz/corpus/quant_tables";
  int parsed = 0, refused = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string b = slurp(e.path().string());
    try {
      const auto t = parse_quant_tables(std::span(reinterpret_cast<const uint8_t*>(b.data()), b.size()), "seed");
      ++parsed;
      const std::string p = temp("resaved.qt");
      save_quant_tables(t, p);
      EXPECT_EQ(slurp(p), b) << e.path();
      EXPECT_EQ(t.model.kv_width, 32);
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(parsed, 2);
  EXPECT_EQ(refused, 4);
}

TEST(QuantTables, CacheIsModelBound) {
  const auto t = tables(2);
  const std::string p = temp("m.kvq");
  save_quant_tables(t, p);
  KvShape s = shape(2);
  s.arch = "llama";
  s.model_hash = 0x1234;
  EXPECT_NO_THROW(make_cache("kvquant:" + p, s));
  auto refused = [&](KvShape sh, const std::string& spec, const char* want) {
    try {
      make_cache(spec, sh);
      ADD_FAILURE() << spec << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  KvShape o = s;
  o.model_hash = 0x9999;
  refused(o, "kvquant:" + p, "fingerprint");
  refused(shape(3), "kvquant:" + p, "n_layers");
  o = s;
  o.arch = "gemma3";
  refused(o, "kvquant:" + p, "architecture");
  refused(s, "kvquant:" + p + ",q=1", "unknown option");
  refused(s, "kvquant:" + p + ",b=0", "b must be");
  refused(s, "kvquant", "needs the tables file");
  refused(s, "kvquant:" + temp("missing.kvq"), "missing.kvq");
}

// Feeds steps of random rows to sequence `seq`; returns every layer's last view (keys, values).
std::vector<float> feed(KvCache& c, int seq, const std::vector<int64_t>& steps, uint32_t seed) {
  std::vector<float> out;
  for (int64_t n : steps) {
    c.begin_step(seq, n);
    for (int l = 0; l < c.shape().n_layers; ++l) {
      const auto k = randn(n * kC, seed++), v = randn(n * kC, seed++);
      c.append(l, k.data(), v.data());
      const KvView view = c.read(l);
      const size_t es = view.dtype == KvDtype::F32 ? 4 : 2, bytes = size_t(view.n_tokens * view.row_stride) * es;
      const size_t o = out.size();
      out.resize(o + 2 * bytes / 4 + 2);
      std::memcpy(out.data() + o, view.k, bytes);
      std::memcpy(reinterpret_cast<char*>(out.data() + o) + bytes, view.v, bytes);
    }
    c.end_step();
  }
  return out;
}

// KVQuant and CQ caches save and load through the session file like every format: a loaded
// sequence continues bit for bit; a session made with other tables is refused.
TEST(QuantTables, SessionsContinueBitForBit) {
  const std::string pk = temp("s.kvq"), pc = temp("s.cqt"), pk2 = temp("s2.kvq");
  save_quant_tables(tables(2), pk);
  save_quant_tables(cq_tables(2, 8), pc);
  auto other = tables(2);
  other.layers[0].value_centroids[0] -= 0.5f;
  save_quant_tables(other, pk2);
  for (const std::string& spec : {"kvquant:" + pk, "cq:" + pc, "kvquant:" + pk + ",p=3,b=8"}) {
    SCOPED_TRACE(spec);
    auto a = make_cache(spec, shape(2));
    const int sa = a->add_sequence();
    feed(*a, sa, {20, 1, 13}, 1);
    const std::string path = temp("s.aqss");
    std::vector<int32_t> ids(34, 7);
    save_session(path, *a, sa, ids, {});
    const auto want = feed(*a, sa, {1, 5, 1}, 99);
    auto b = make_cache(spec, shape(2));
    b->add_sequence();
    const int sb = b->add_sequence();
    SessionFile::open(path)->load_into(*b, sb);
    EXPECT_EQ(b->n_tokens(sb), 34);
    const auto got = feed(*b, sb, {1, 5, 1}, 99);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0);
    if (spec.rfind("kvquant:", 0) == 0 && spec.find(",p=") == std::string::npos) {
      auto c = make_cache("kvquant:" + pk2, shape(2));
      EXPECT_NE(c->state_format(), a->state_format());
      const int sc = c->add_sequence();
      EXPECT_THROW(SessionFile::open(path)->load_into(*c, sc), Error);
    }
  }
}

// The layered cache of single-layer compressed caches with one codec for every layer equals
// the one-codec stack: same views bit for bit, same bytes.
TEST(LayeredCache, EqualsTheStackWithOneCodec) {
  const int L = 3;
  const KvShape s = shape(L);
  std::vector<std::unique_ptr<KvCache>> layers;
  for (int l = 0; l < L; ++l) {
    CompressedCacheOptions o;
    o.name = "layered";
    o.sinks = 2;
    o.buffer = 16;
    o.key_codec = std::shared_ptr<const Codec>(make_codec("q4_0r", kC));
    o.value_codec = std::shared_ptr<const Codec>(make_codec("q4_0r", kC));
    o.keys_after_rope = true;  // as q4_0r stores keys (after RoPE)
    layers.push_back(make_compressed_cache(single_layer_shape(s, l), o));
  }
  auto a = make_layered_cache(s, "layered", std::move(layers), 100);
  auto b = make_cache("q4_0r,p=2,b=16", s);
  const int sa = a->add_sequence(), sb = b->add_sequence();
  uint32_t seed = 1;
  for (int64_t n : {5, 1, 20, 1, 7}) {
    a->begin_step(sa, n);
    b->begin_step(sb, n);
    for (int l = 0; l < L; ++l) {
      const auto k = randn(n * kC, seed++), v = randn(n * kC, seed++);
      a->append(l, k.data(), v.data());
      b->append(l, k.data(), v.data());
      const KvView va = a->read(l), vb = b->read(l);
      ASSERT_EQ(va.n_tokens, vb.n_tokens);
      ASSERT_EQ(va.dtype, vb.dtype);
      const size_t es = va.dtype == KvDtype::F32 ? 4 : 2;
      ASSERT_EQ(std::memcmp(va.k, vb.k, size_t(va.n_tokens * va.row_stride) * es), 0) << "layer " << l;
      ASSERT_EQ(std::memcmp(va.v, vb.v, size_t(va.n_tokens * va.row_stride) * es), 0) << "layer " << l;
      ASSERT_EQ(std::memcmp(va.pos, vb.pos, size_t(va.n_tokens) * 4), 0);
    }
    a->end_step();
    b->end_step();
  }
  EXPECT_EQ(a->live_bytes(), b->live_bytes());
  EXPECT_EQ(a->fixed_bytes(), b->fixed_bytes() + 100);
  EXPECT_EQ(a->n_tokens(sa), 34);
  double ba = 0, bb = 0;
  for (const auto& t : a->bits_report(sa)) ba += t.bits_per_value;
  for (const auto& t : b->bits_report(sb)) bb += t.bits_per_value;
  EXPECT_NEAR(ba, bb, 1e-9);
}

TEST(CqCodec, NearestCodewordAndBits) {
  for (int64_t c : {4, 8}) {
    const int bits = 8;
    const int64_t K = 256, G = kC / c;
    const auto books = randn(G * K * c, 31 + uint32_t(c));
    const CqCodec codec("cq", kC, c, bits, books);
    EXPECT_DOUBLE_EQ(codec.bits_per_value(), 8.0 / double(c));  // codes only: codebooks are per model
    const int64_t rows = 20;
    const auto x = randn(rows * kC, 41);
    std::vector<uint8_t> b(size_t(codec.encoded_bytes(rows)));
    std::vector<float> y(x.size());
    codec.encode(x.data(), rows, b.data());
    codec.decode(b.data(), rows, y.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < G; ++g) {
        // float64: the least distance over the group's codebook, and the decoded group's distance
        // (which must be a codeword of that book, and the nearest).
        double best = INFINITY, got = 0;
        const float* v = x.data() + r * kC + g * c;
        for (int64_t j = 0; j < K; ++j) {
          double d = 0;
          for (int64_t i = 0; i < c; ++i) d += std::pow(double(v[i]) - books[size_t((g * K + j) * c + i)], 2);
          best = std::min(best, d);
        }
        bool is_codeword = false;
        for (int64_t j = 0; j < K && !is_codeword; ++j) {
          is_codeword = true;
          for (int64_t i = 0; i < c; ++i)
            is_codeword &= y[size_t(r * kC + g * c + i)] == books[size_t((g * K + j) * c + i)];
        }
        ASSERT_TRUE(is_codeword) << "c " << c << " row " << r << " group " << g;
        for (int64_t i = 0; i < c; ++i) got += std::pow(double(v[i]) - y[size_t(r * kC + g * c + i)], 2);
        ASSERT_LE(got, best * (1 + 1e-5) + 1e-12) << "c " << c << " row " << r << " group " << g;
      }
  }
  EXPECT_THROW(CqCodec("cq", kC, 5, 8, std::vector<float>(size_t(kC) * 256)), Error);   // 5 does not divide 192
  EXPECT_THROW(CqCodec("cq", kC, 4, 0, std::vector<float>(size_t(kC))), Error);         // bits 0
  EXPECT_THROW(CqCodec("cq", kC, 4, 8, std::vector<float>(size_t(kC) * 255)), Error);   // size
  std::vector<float> nan(size_t(kC) * 256, 0.0f);
  nan[77] = NAN;
  EXPECT_THROW(CqCodec("cq", kC, 4, 8, nan), Error);
}

TEST(CqFit, KMeansIsALloydFixedPointAndFindsClusters) {
  // Four well separated clusters in R^4 (centres at +-5 on two axes), 100 points each.
  const int64_t c = 4, n = 400;
  auto x = randn(n * c, 51, 0.3f);
  const float centre[4][4] = {{5, 0, 0, 0}, {-5, 0, 0, 0}, {0, 5, 0, 0}, {0, -5, 0, 0}};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < c; ++d) x[size_t(i * c + d)] += centre[i % 4][d];
  for (int64_t k : {4, 16}) {
    const auto cen = kmeans_nd(x, c, k, 100, 3);
    ASSERT_EQ(int64_t(cen.size()), k * c);
    std::vector<double> sum(static_cast<size_t>(k * c), 0.0), cnt(static_cast<size_t>(k), 0.0);
    double obj = 0;
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      double bd = INFINITY;
      for (int64_t j = 0; j < k; ++j) {
        double d = 0;
        for (int64_t e = 0; e < c; ++e) d += std::pow(double(x[size_t(i * c + e)]) - cen[size_t(j * c + e)], 2);
        if (d < bd) { bd = d; best = j; }
      }
      obj += bd;
      cnt[size_t(best)] += 1;
      for (int64_t e = 0; e < c; ++e) sum[size_t(best * c + e)] += x[size_t(i * c + e)];
    }
    for (int64_t j = 0; j < k; ++j)
      for (int64_t e = 0; e < c && cnt[size_t(j)] > 0; ++e)
        EXPECT_NEAR(cen[size_t(j * c + e)], sum[size_t(j * c + e)] / cnt[size_t(j)], 1e-4) << k << " " << j;
    // With 4 centroids a 0.3-sd cluster each: mean squared error ~ c * 0.09 per point.
    if (k == 4) {
      EXPECT_LT(obj / n, 4 * 0.09 * 1.3);
    }
  }
}

TEST(CqFit, WeightedKMeansFollowsTheWeights) {
  // Five clusters in R^2; the fifth weighs nothing, the first 30x the others.
  const int64_t c = 2, n = 500;
  auto x = randn(n * c, 61, 0.3f);
  const float centre[5][2] = {{5, 0}, {-5, 0}, {0, 5}, {0, -5}, {20, 20}};
  std::vector<float> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < c; ++d) x[size_t(i * c + d)] += centre[i % 5][d];
    w[size_t(i)] = i % 5 == 4 ? 0.0f : i % 5 == 0 ? 30.0f : 1.0f;
  }
  for (uint64_t seed : {1u, 2u, 3u}) {
    const auto cen = kmeans_nd(x, c, 4, 100, seed, &w);
    // Weighted Lloyd fixed point, and no centroid on the weightless cluster.
    std::vector<double> sum(8, 0.0), ws(4, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      double bd = INFINITY;
      for (int64_t j = 0; j < 4; ++j) {
        const double d = std::pow(double(x[size_t(i * c)]) - cen[size_t(j * c)], 2) + std::pow(double(x[size_t(i * c + 1)]) - cen[size_t(j * c + 1)], 2);
        if (d < bd) { bd = d; best = j; }
      }
      ws[size_t(best)] += w[size_t(i)];
      for (int64_t e = 0; e < c; ++e) sum[size_t(best * c + e)] += double(w[size_t(i)]) * x[size_t(i * c + e)];
    }
    for (int64_t j = 0; j < 4; ++j) {
      EXPECT_LT(cen[size_t(j * c)] + cen[size_t(j * c + 1)], 20.0f) << seed << " " << j;
      for (int64_t e = 0; e < c && ws[size_t(j)] > 0; ++e)
        EXPECT_NEAR(cen[size_t(j * c + e)], sum[size_t(j * c + e)] / ws[size_t(j)], 1e-4) << seed << " " << j;
    }
  }
}

TEST(CqTables, FileAndCache) {
  const auto t = cq_tables(2, 4);
  EXPECT_EQ(t.method, "cq");
  EXPECT_EQ(t.layers[0].key_centroids.size(), size_t(kC) * 64);
  const std::string p = temp("cq.cqt");
  save_quant_tables(t, p);
  const auto u = load_quant_tables(p);
  EXPECT_EQ(u.group, 4);
  EXPECT_EQ(u.layers[1].value_centroids, t.layers[1].value_centroids);
  KvShape s = shape(2);
  auto cache = make_cache("cq:" + p, s);
  EXPECT_EQ(cache->name(), "cq:" + p + ",p=0,b=1");
  // A KVQuant file is not a CQ file and the other way round.
  const std::string q = temp("k.kvq");
  save_quant_tables(tables(2), q);
  EXPECT_THROW(make_cache("cq:" + q, s), Error);
  EXPECT_THROW(make_cache("kvquant:" + p, s), Error);
  // Tables whose sizes do not fit the method are refused at save.
  auto bad = t;
  bad.bits = 5;
  EXPECT_THROW(save_quant_tables(bad, temp("bad.cqt")), Error);
}

}  // namespace
}  // namespace aquakv
