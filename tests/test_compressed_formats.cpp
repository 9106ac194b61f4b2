// Tests of kv/compressed_formats with quant's real codecs on the default model's KV shape
// (C = 192): every --kv spelling builds, live bytes equal the codecs' byte formula, HIGGS
// reconstruction of the calibration chain equals the cache's bit for bit, and bad specs and
// mismatched adapters (other shape, other model identity) are refused with a message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

constexpr int kL = 3, kH = 3, kHd = 64, kC = kH * kHd;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 4096;
  return s;
}

// Feeds T random tokens in steps of `step`, reading every layer; returns the last views.
std::vector<std::vector<float>> feed(KvCache& c, int64_t T, int64_t step, const std::vector<float>& x) {
  const int seq = c.add_sequence();
  std::vector<std::vector<float>> views(2 * kL);
  for (int64_t t0 = 0; t0 < T; t0 += step) {
    const int64_t n = std::min(step, T - t0);
    c.begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      const float* k = x.data() + ((2 * l) * T + t0) * kC;
      const float* v = x.data() + ((2 * l + 1) * T + t0) * kC;
      c.append(l, k, v);
      const KvView view = c.read(l);
      const float* vk = static_cast<const float*>(view.k);
      const float* vv = static_cast<const float*>(view.v);
      views[2 * l].assign(vk, vk + view.n_tokens * kC);
      views[2 * l + 1].assign(vv, vv + view.n_tokens * kC);
    }
    c.end_step();
  }
  return views;
}

// A --kv spelling through the registry (kv/cache_factory.h).
std::unique_ptr<KvCache> make_spec(const std::string& spec) { return make_cache(spec, shape()); }

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& e : x) e = g(rng);
  return x;
}

TEST(CompressedFormats, EveryFormatBuildsAndCountsItsBytes) {
  const int64_t T = 300;
  const auto x = randn(2 * kL * T * kC, 1);
  struct Case { std::string spec; std::string kc, vc; int64_t p, b; };
  const Case cases[] = {
      {"higgs", "higgs2", "higgs2", 4, 128},
      // The registry's higgs2/3/4 formats use groups of one head (64 here); plain "higgs" the
      // codec's default (the whole 192-wide row).
      {"higgs2", "higgs:2x16:g64", "higgs:2x16:g64", 4, 128},
      {"higgs3,p=2,b=64", "higgs:2x64:g64", "higgs:2x64:g64", 2, 64},
      {"higgs4", "higgs:2x256:g64", "higgs:2x256:g64", 4, 128},
      {"higgs:2x64:g64", "higgs:2x64:g64", "higgs:2x64:g64", 4, 128},
      {"higgs,k=higgs3,v=higgs2", "higgs3", "higgs2", 4, 128},
      {"kivi2", "kivi2", "kivi2", 0, 128},
      {"kivi4", "kivi4", "kivi4", 0, 128},
      {"kivi3", "kivi3", "kivi3", 0, 128},
      {"q4_1", "q4_1", "q4_1", 0, 1},
      {"q8_0r", "q8_0r:h64", "q8_0r:h64", 0, 1},  // the rotation spans one head (64)
      {"q4_0r", "q4_0r:h64", "q4_0r:h64", 0, 1},
      {"q4_1r,p=4,b=32", "q4_1r:h64", "q4_1r:h64", 4, 32},
  };
  {
    auto plain = make_spec("f32");
    feed(*plain, T, 32, x);
    EXPECT_EQ(plain->encode_nanoseconds(), 0);  // rows stored as given: nothing coded
  }
  for (const auto& c : cases) {
    auto cache = make_spec(c.spec);
    EXPECT_EQ(cache->encode_nanoseconds(), 0) << c.spec;
    const auto views = feed(*cache, T, 32, x);
    const auto kc = make_codec(c.kc, kC, KvStream::kKey);
    const auto vc = make_codec(c.vc, kC, KvStream::kValue);
    // Chunk bookkeeping: the buffer is compressed (in whole blocks) when it reaches b.
    int64_t compressed = 0;
    const int64_t block = std::max(kc->block_rows(), vc->block_rows());
    for (int64_t t = 32; t <= T + 31; t += 32) {
      const int64_t Tn = std::min(t, T);
      const int64_t buf = Tn - std::min(Tn, c.p) - compressed;
      if (buf >= c.b) compressed += buf - buf % block;
    }
    const int64_t exact = T - compressed;
    const int64_t want = exact * kL * 2 * kC * 2 + kL * (kc->encoded_bytes(compressed) + vc->encoded_bytes(compressed));
    EXPECT_EQ(cache->live_bytes(), want) << c.spec;
    EXPECT_GT(compressed, 0) << c.spec;
    EXPECT_GT(cache->encode_nanoseconds(), 0) << c.spec;  // rows were coded: bench's encode share
    // Lossy but sane: reconstruction error of compressed keys well below the signal.
    double err = 0, sig = 0;
    for (int64_t t = c.p; t < c.p + compressed; ++t)
      for (int j = 0; j < kC; ++j) {
        const double d = views[2][size_t(t * kC + j)] - x[size_t((2 * 1 * T + t) * kC + j)];
        err += d * d;
        sig += double(x[size_t((2 * T + t) * kC + j)]) * x[size_t((2 * T + t) * kC + j)];
      }
    EXPECT_LT(err / sig, 0.2) << c.spec;
    EXPECT_GT(err / sig, 1e-5) << c.spec;
  }
}

TEST(CompressedFormats, HiggsChainEqualsCacheBitForBit) {
  // Fit a chain on random data with HIGGS codecs, then feed the same rows through the aquakv
  // cache built from the adapter file: the cache's views equal the chain's reconstructions.
  const int64_t rows = 2400;
  KvSamples s;
  s.n_layers = kL;
  s.width = kC;
  s.n_train = 2000;
  s.n_val = 400;
  const auto x = randn(2 * kL * rows * kC, 2);
  s.k.resize(kL);
  s.v.resize(kL);
  for (int l = 0; l < kL; ++l)
    for (int64_t i = 0; i < rows * kC; ++i) {
      // Correlated layers: layer l = 0.7 * layer l-1 + fresh noise.
      const float prev_k = l ? fp16_to_fp32(s.k[l - 1][size_t(i)]) : 0.f;
      const float prev_v = l ? fp16_to_fp32(s.v[l - 1][size_t(i)]) : 0.f;
      s.k[l].push_back(fp32_to_fp16(0.7f * prev_k + x[size_t((2 * l) * rows * kC + i)]));
      s.v[l].push_back(fp32_to_fp16(0.7f * prev_v + x[size_t((2 * l + 1) * rows * kC + i)]));
    }
  ChainOptions o;
  o.key_codec = std::shared_ptr<const Codec>(make_codec("higgs3", kC));
  o.value_codec = std::shared_ptr<const Codec>(make_codec("higgs2", kC));
  o.layer0_codec = std::shared_ptr<const Codec>(make_codec("higgs4", kC));
  std::vector<std::vector<float>> ck(kL), cv(kL);
  o.on_layer = [&](int l, const std::vector<float>& k, const std::vector<float>& v) { ck[l] = k; cv[l] = v; };
  std::vector<LayerFitStats> st;
  Adapters a;
  a.model = {"test", kL, kH, kHd, kC, 0};
  a.quant = aquakv_quant_config("higgs3", "higgs2", "higgs4", kC);
  a.layers = fit_chain(s, o, &st);
  // The predictable part of layer 1 is 0.49 / 1.49 of its variance: the best predictor leaves
  // relative MSE 0.67, plus ~p/n = 10% for fitting 193 parameters per output on 2000 rows.
  EXPECT_LT(st[1].k_val, 0.8);
  EXPECT_GT(st[1].k_val, 0.6);
  const std::string path = (std::filesystem::temp_directory_path() / ("aqkv_fmt_" + std::to_string(getpid()))).string();
  save_adapters(a, path);
  auto cache = make_cache("aquakv:" + path + ",p=0,b=1", shape());
  std::vector<float> xs(size_t(2 * kL * rows * kC));
  for (int l = 0; l < kL; ++l)
    for (int64_t i = 0; i < rows * kC; ++i) {
      xs[size_t((2 * l) * rows * kC + i)] = fp16_to_fp32(s.k[l][size_t(i)]);
      xs[size_t((2 * l + 1) * rows * kC + i)] = fp16_to_fp32(s.v[l][size_t(i)]);
    }
  feed(*cache, rows, 200, xs);  // every step compressed at its end
  const auto views = feed(*cache, 0, 1, xs);  // (a fresh sequence; re-read the first one below)
  (void)views;
  // Re-read sequence 0 in a zero-token step.
  cache->begin_step(0, 0);
  for (int l = 0; l < kL; ++l) {
    cache->append(l, nullptr, nullptr);
    const KvView v = cache->read(l);
    ASSERT_EQ(v.n_tokens, rows);
    EXPECT_EQ(std::memcmp(v.k, ck[l].data(), size_t(rows * kC * 4)), 0) << "keys, layer " << l;
    EXPECT_EQ(std::memcmp(v.v, cv[l].data(), size_t(rows * kC * 4)), 0) << "values, layer " << l;
  }
  cache->end_step();
  // Adapters of another shape are refused with the reason.
  KvShape other = shape();
  other.n_layers = kL + 1;
  try {
    make_cache("aquakv:" + path, other);
    ADD_FAILURE() << "accepted adapters for another layer count";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

// Adapters carry the fingerprint of the model they were fitted on; a shape that knows its model
// (Model::kv_shape) gets them only when architecture and model hash match. Shapes that do not
// know the model (arch "", hash 0) are checked on dimensions only.
TEST(CompressedFormats, AquakvChecksTheModelIdentity) {
  Adapters a;
  a.model = {"llama", kL, kH, kHd, kC, 0x0123456789abcdefull};
  a.quant = aquakv_quant_config("higgs2", "higgs2", "higgs4", kC);
  a.layers.resize(kL);
  for (int l = 1; l < kL; ++l) {
    auto& p = a.layers[size_t(l)];
    p.key.in = p.key.out = p.value.out = kC;
    p.value.in = 2 * kC;
    p.key.w.assign(size_t(kC * kC), 0.f);
    p.value.w.assign(size_t(2 * kC * kC), 0.f);
    p.key.bias.assign(size_t(kC), 0.f);
    p.value.bias.assign(size_t(kC), 0.f);
  }
  const std::string path = (std::filesystem::temp_directory_path() / ("aqkv_id_" + std::to_string(getpid()))).string();
  save_adapters(a, path);
  KvShape same = shape();
  same.arch = "llama";
  same.model_hash = 0x0123456789abcdefull;
  EXPECT_NE(make_cache("aquakv:" + path, same), nullptr);
  EXPECT_NE(make_cache("aquakv:" + path, shape()), nullptr);  // identity unknown: shape only
  KvShape hash_known = shape();
  hash_known.model_hash = 0x0123456789abcdefull;
  EXPECT_NE(make_cache("aquakv:" + path, hash_known), nullptr);  // arch unknown, hash equal

  KvShape other = same;
  other.model_hash = 0xfedcba9876543210ull;
  try {
    make_cache("aquakv:" + path, other);
    ADD_FAILURE() << "accepted adapters made for another model";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("adapters " + path + ":"), std::string::npos) << m;
    EXPECT_NE(m.find("another model"), std::string::npos) << m;
    EXPECT_NE(m.find("0123456789abcdef in the file"), std::string::npos) << m;
    EXPECT_NE(m.find("this model's is fedcba9876543210"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  other = same;
  other.arch = "qwen2";
  try {
    make_cache("aquakv:" + path, other);
    ADD_FAILURE() << "accepted adapters made for another architecture";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'llama', the model is 'qwen2'"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(CompressedFormats, RefusesBadSpecs) {
  const std::pair<std::string, std::string> bad[] = {
      {"higgs", ",p=x"}, {"higgs", ",q=1"}, {"higgs", ",b=0"}, {"higgs", ",p"}, {"higgs2", ":2x16"},
      {"higgs", ":2y16"}, {"aquakv", ""}, {"aquakv", ":/nonexistent/file"}, {"kivi2", ",k=bogus"},
      {"q4_0r", ":h32"}, {"q8_0r", ",k=q8_0r:h48"}, {"higgs2", ",rope=after"}, {"q8_0", ",rope="},
  };
  for (const auto& [name, args] : bad) {
    EXPECT_THROW(make_cache(name + args, shape()), Error) << name << args;
  }
}

// Where keys are coded: after RoPE by default, before RoPE for KIVI (per-channel groups over
// tokens) and whenever rope=pre says so; AQUA-KV refuses rope=post (its predictors map keys
// before RoPE). The session format names the choice, so files of the two kinds never mix.
TEST(CompressedFormats, KeysBeforeOrAfterRope) {
  KvShape s = shape();
  s.rope.n_rot = s.head_dim;
  const std::pair<std::string, bool> cases[] = {{"higgs2", true}, {"q8_0", true}, {"kivi2", false},
                                                {"higgs2,rope=pre", false}, {"kivi4,rope=post", true}};
  for (const auto& [spec, after] : cases) {
    auto c = make_cache(spec, s);
    const int seq = c->add_sequence();
    std::vector<float> k(size_t(s.width()), 1.0f);
    c->begin_step(seq, 1);
    for (int l = 0; l < s.n_layers; ++l) c->append(l, k.data(), k.data());
    EXPECT_EQ(c->read(0).k_roped, after) << spec;
    c->end_step();
    EXPECT_EQ(c->state_format().find("keys=roped") != std::string::npos, after) << spec;
  }
  try {
    make_cache("aquakv:/nonexistent,rope=post", s);
    ADD_FAILURE() << "aquakv rope=post accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rope=post"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace aquakv
