// AQUA-KV on the real model (needs AQUAKV_MODEL): with quantization off and zero predictors the
// compressed cache gives the logits of the same cache without predictors (same stored values,
// only the tiling of attention differs) and, within fp16 rounding, the fp16 cache's; predictors calibrated on a little text
// beat plain HIGGS at the same bits (KL to the fp16 logits); the model fingerprint reacts to
// weights and hyper-parameters, not to tokenizer metadata; --kv aquakv:FILE refuses adapters of
// a same-shape model with another fingerprint.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <unistd.h>

#include "aquakv/calib/capture.h"
#include "aquakv/calib/fit_chain.h"
#include "aquakv/engine/fingerprint.h"
#include "aquakv/engine/forward.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/error.h"
#include "model_fixture.h"

namespace aquakv {
namespace {

class AquaModelTest : public testing::RealModelTest {
 protected:
  // Calibration text (never the evaluation text); $AQUAKV_SHARED_DIR overrides the build's path.
  static std::string shared_dir() {
    const char* e = std::getenv("AQUAKV_SHARED_DIR");
    return e != nullptr && *e != '\0' ? e : AQUAKV_SHARED_DIR;
  }
  std::vector<int32_t> text_tokens(int64_t n, int64_t skip) const {
    std::ifstream f(shared_dir() + "/data/calibration/wiki.txt");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (text.size() < 100000) throw std::runtime_error("calibration text missing under " + shared_dir());
    const auto ids = Tokenizer::from_gguf(model_->gguf()).encode(text.substr(0, 100000), false);
    if (int64_t(ids.size()) < skip + n) throw std::runtime_error("calibration text too short");
    return std::vector<int32_t>(ids.begin() + skip, ids.begin() + skip + n);
  }

  std::vector<float> run(KvCache& cache, const std::vector<int32_t>& ids, int64_t step) const {
    Forward fwd(*model_, 2);
    return testing::logits_in_steps(fwd, cache, cache.add_sequence(), ids, step);
  }

  // Mean KL(p_ref || p) over rows.
  double mean_kl(const std::vector<float>& ref, const std::vector<float>& x) const {
    const int64_t rows = int64_t(ref.size()) / V();
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* a = ref.data() + r * V();
      const float* b = x.data() + r * V();
      const double ma = *std::max_element(a, a + V()), mb = *std::max_element(b, b + V());
      double za = 0, zb = 0;
      for (int64_t i = 0; i < V(); ++i) { za += std::exp(a[i] - ma); zb += std::exp(b[i] - mb); }
      double kl = 0;
      for (int64_t i = 0; i < V(); ++i) {
        const double pa = std::exp(a[i] - ma) / za;
        kl += pa * ((a[i] - ma - std::log(za)) - (b[i] - mb - std::log(zb)));
      }
      total += kl;
    }
    return total / double(rows);
  }
};

// The plain fp16 cache rounds keys to fp16 after RoPE, the compressed cache before it (its
// predictors work on un-rotated keys): each key element differs by at most 2^-11 relative, the
// size of the f16 flips that StepSizesAgreeWithDefaultPaths (test_forward.cpp) bounds by 0.05
// on logits. Against the same compressed cache without predictors (identical stored values;
// rebuilt rows read as one f32 segment instead of per-chunk tiles) only f32 summation order
// differs, which the 8-bit activation rounding of the dot path can amplify to the same 0.05.
TEST_F(AquaModelTest, QuantizationOffAndZeroPredictorsGiveFp16Logits) {
  const auto ids = text_tokens(120, 0);
  auto plain = make_cache("fp16", model_->kv_shape(256));
  const auto ref = run(*plain, ids, 16);
  auto half = std::shared_ptr<const Codec>(make_codec("fp16", C()));
  auto zero = std::make_shared<Adapters>();
  const KvShape shape = model_->kv_shape(256);
  zero->model = {"llama", shape.n_layers, shape.n_kv_heads, shape.head_dim, C(), 0};
  zero->layers.resize(size_t(shape.n_layers));
  for (int l = 1; l < shape.n_layers; ++l) {
    auto& lp = zero->layers[size_t(l)];
    lp.key.in = lp.key.out = lp.value.out = C();
    lp.value.in = 2 * C();
    lp.key.w.assign(size_t(C() * C()), 0.f);
    lp.value.w.assign(size_t(2 * C() * C()), 0.f);
    lp.key.bias.assign(size_t(C()), 0.f);
    lp.value.bias.assign(size_t(C()), 0.f);
  }
  CompressedCacheOptions o;
  o.name = "aquakv-off";
  o.sinks = 4;
  o.buffer = 16;  // several chunks in 120 tokens
  o.key_codec = o.value_codec = half;
  auto no_pred = make_compressed_cache(shape, o);
  const auto base = run(*no_pred, ids, 16);
  o.adapters = zero;
  auto cache = make_compressed_cache(shape, o);
  const auto got = run(*cache, ids, 16);
  ASSERT_EQ(got.size(), ref.size());
  double d_base = 0, d_fp16 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    d_base = std::max(d_base, double(std::fabs(got[i] - base[i])));
    d_fp16 = std::max(d_fp16, double(std::fabs(got[i] - ref[i])));
  }
  std::printf("zero predictors vs no predictors: max |dlogit| %.2e; vs fp16 cache %.2e\n", d_base, d_fp16);
  EXPECT_LT(d_base, 0.05);
  EXPECT_LT(d_fp16, 0.05);
  EXPECT_LT(cache->live_bytes(), plain->live_bytes() * 2);
}

TEST_F(AquaModelTest, CalibratedPredictorsBeatPlainHiggs) {
  // Capture 4 windows of 256 tokens with exact K/V, fit the chain (keys 2-bit, values 2-bit,
  // layer 0 4-bit), then compare KL to fp16 on other text: AQUA-KV < HIGGS 2-bit.
  const KvShape cap_shape = model_->kv_shape(256);
  RecordingCache rec(cap_shape);
  Forward fwd(*model_, 2);
  std::vector<int> train, val;
  for (int w = 0; w < 5; ++w) {
    const auto ids = text_tokens(256, 2000 + 256 * w);
    const int seq = rec.add_sequence();
    fwd.eval(rec, seq, ids, nullptr, false);
    rec.clear(seq);
    (w < 4 ? train : val).push_back(seq);
  }
  KvSamples s = rec.take_samples(train, val);
  EXPECT_EQ(s.n_train, 1024);
  EXPECT_EQ(s.n_val, 256);
  ChainOptions o;
  o.key_codec = o.value_codec = std::shared_ptr<const Codec>(make_codec("higgs2", C()));
  o.layer0_codec = std::shared_ptr<const Codec>(make_codec("higgs4", C()));
  o.damping = 1e-2;  // few rows
  std::vector<LayerFitStats> st;
  auto a = std::make_shared<Adapters>();
  a->model = model_fingerprint(model_->gguf(), cap_shape);
  a->quant = aquakv_quant_config("higgs2", "higgs2", "higgs4", C());
  a->layers = fit_chain(s, o, &st);
  // Keys of adjacent layers are predictable: validation relative MSE well below 1 on average.
  double kmean = 0;
  for (size_t l = 1; l < st.size(); ++l) kmean += st[l].k_val / double(st.size() - 1);
  EXPECT_LT(kmean, 0.5);

  const auto ids = text_tokens(256, 0);
  const KvShape shape = model_->kv_shape(512);
  auto plain = make_cache("fp16", shape);
  const auto ref = run(*plain, ids, 32);
  CompressedCacheOptions co;
  co.name = "aquakv";
  co.key_codec = co.value_codec = o.key_codec;
  co.layer0_key_codec = co.layer0_value_codec = o.layer0_codec;
  co.adapters = a;
  auto aq = make_compressed_cache(shape, co);
  auto hg = make_cache("higgs2", shape);
  const double kl_aq = mean_kl(ref, run(*aq, ids, 32));
  const double kl_hg = mean_kl(ref, run(*hg, ids, 32));
  RecordProperty("kl_aquakv", std::to_string(kl_aq));
  RecordProperty("kl_higgs2", std::to_string(kl_hg));
  std::printf("mean KL to fp16: aquakv %.5f, higgs2 %.5f\n", kl_aq, kl_hg);
  EXPECT_GT(kl_aq, 0.0);
  EXPECT_LT(kl_aq, kl_hg);
}

TEST_F(AquaModelTest, FingerprintFollowsWeightsNotTokenizer) {
  const std::string path = model_->path();
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const KvShape shape = model_->kv_shape(16);
  const uint64_t base = model_fingerprint(*GgufFile::from_memory(bytes, "m"), shape).meta_hash;
  EXPECT_EQ(base, model_fingerprint(model_->gguf(), shape).meta_hash);
  auto find = [&](const void* needle, size_t n) {
    const auto it = std::search(bytes.begin(), bytes.end(), static_cast<const uint8_t*>(needle),
                                static_cast<const uint8_t*>(needle) + n);
    EXPECT_NE(it, bytes.end());
    return size_t(it - bytes.begin());
  };
  auto hash_of = [&](const std::vector<uint8_t>& b) {
    return model_fingerprint(*GgufFile::from_memory(b, "m"), shape).meta_hash;
  };
  // A weight byte of layer 3's K projection (located by its first 64 bytes).
  const auto& t = model_->gguf().tensor("blk.3.attn_k.weight");
  std::vector<uint8_t> w = bytes;
  w[find(t.data, 64) + 5] ^= 1;
  EXPECT_NE(hash_of(w), base) << "weights changed, fingerprint did not";
  // A hyper-parameter: the RoPE base (f32 value after the key, its length and its type).
  const std::string key = "llama.rope.freq_base";
  w = bytes;
  w[find(key.data(), key.size()) + key.size() + 4 + 1] ^= 1;
  EXPECT_NE(hash_of(w), base) << "rope base changed, fingerprint did not";
  // Tokenizer metadata does not determine K/V: the pre-tokenizer name may change.
  const std::string pre = "smollm";
  w = bytes;
  w[find(pre.data(), pre.size()) + 5] = 'x';
  EXPECT_EQ(hash_of(w), base);
}

// The engine passes the model's identity to caches (KvShape::arch, model_hash), so adapters of a
// model with the same shape but other weights or hyper-parameters are refused by --kv aquakv:FILE.
TEST_F(AquaModelTest, AdaptersOfAnotherSameShapeModelAreRefused) {
  const KvShape shape = model_->kv_shape(64);
  const ModelFingerprint fp = model_fingerprint(model_->gguf(), shape);
  EXPECT_EQ(shape.arch, "llama");
  EXPECT_EQ(shape.model_hash, fp.meta_hash);
  EXPECT_EQ(model_->meta_hash(), fp.meta_hash);
  Adapters a;
  a.model = fp;
  a.quant = aquakv_quant_config("higgs2", "higgs2", "higgs4", C());
  a.layers.resize(size_t(shape.n_layers));
  for (int l = 1; l < shape.n_layers; ++l) {
    auto& lp = a.layers[size_t(l)];
    lp.key.in = lp.key.out = lp.value.out = C();
    lp.value.in = 2 * C();
    lp.key.w.assign(size_t(C() * C()), 0.f);
    lp.value.w.assign(size_t(2 * C() * C()), 0.f);
    lp.key.bias.assign(size_t(C()), 0.f);
    lp.value.bias.assign(size_t(C()), 0.f);
  }
  const std::string path =
      (std::filesystem::temp_directory_path() / ("aqkv_model_id_" + std::to_string(getpid()) + ".aqkv")).string();
  save_adapters(a, path);
  EXPECT_NE(make_cache("aquakv:" + path, shape), nullptr);  // its own model: accepted

  // The same model with one hyper-parameter changed (the lowest mantissa bit of the RoPE base, an
  // f32 after the key's bytes and the u32 value type): same shape, other fingerprint.
  std::ifstream f(model_->path(), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::string key = "llama.rope.freq_base";
  const auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(it, bytes.end());
  bytes[size_t(it - bytes.begin()) + key.size() + 4] ^= 1;
  const auto other = Model::from_gguf(GgufFile::from_memory(bytes, "rope-changed.gguf"));
  EXPECT_NE(other->config().rope.freq_base, model_->config().rope.freq_base);
  const KvShape oshape = other->kv_shape(64);
  EXPECT_EQ(oshape.width(), shape.width());
  EXPECT_EQ(oshape.n_layers, shape.n_layers);
  EXPECT_NE(oshape.model_hash, shape.model_hash);
  try {
    make_cache("aquakv:" + path, oshape);
    ADD_FAILURE() << "adapters of another model accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    char want[64], got[64];
    std::snprintf(want, sizeof want, "%016llx in the file", (unsigned long long)shape.model_hash);
    std::snprintf(got, sizeof got, "this model's is %016llx", (unsigned long long)oshape.model_hash);
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(want), std::string::npos) << m;
    EXPECT_NE(m.find(got), std::string::npos) << m;
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace aquakv
