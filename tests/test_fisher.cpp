// The KV-cache loss gradients of calib/fisher.h, needs AQUAKV_MODEL. Two references that do not
// use the backward pass:
//  - the engine's inference forward (float32, engine/forward.h) through an exact recording cache:
//    the float64 re-run must see the same keys and values (as recorded in fp16) and the same loss;
//  - central finite differences of the float64 loss at randomly chosen key and value elements of
//    several layers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "aquakv/calib/capture.h"
#include "aquakv/calib/fisher.h"
#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

class Fisher : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = Model::load(m);
    const Tokenizer tok = Tokenizer::from_gguf(model_->gguf());
    tokens_ = tok.encode(
        "The cache of a transformer keeps the keys and values of every earlier token, so that each new "
        "token attends to them without recomputing the past. Quantizing it saves memory.",
        true, false);
    ASSERT_GE(tokens_.size(), 24u);
  }
  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
};

// Next-token cross-entropy of float logits (T, V), in double.
double cross_entropy(const std::vector<float>& logits, const std::vector<int32_t>& tokens, int64_t V) {
  double loss = 0;
  const int64_t T = int64_t(tokens.size());
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = logits.data() + t * V;
    double mx = row[0], s = 0;
    for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double(row[j]));
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(row[j]) - mx);
    loss += mx + std::log(s) - double(row[tokens[size_t(t + 1)]]);
  }
  return loss / double(T - 1);
}

TEST_F(Fisher, ForwardMatchesTheEngine) {
  const ModelConfig& c = model_->config();
  const int64_t T = int64_t(tokens_.size()), C = c.kv_width();
  RecordingCache cache(model_->kv_shape(T));
  const int seq = cache.add_sequence();
  std::vector<float> logits(size_t(T * c.n_vocab));
  Forward fwd(*model_, 2);
  fwd.eval(cache, seq, tokens_, logits.data(), true);
  const KvSamples rec = cache.take_samples({seq}, {});
  const KvGradients g = KvGradientModel(*model_).gradients(tokens_);
  // The engine computes in float32 (relative rounding ~1e-6 per operation, a few 1e-5 after 30
  // layers) and records in fp16 (relative 2^-11 = 4.9e-4): 1e-3 of the layer's largest value.
  for (int l = 0; l < c.n_layers; ++l) {
    double kmax = 0, vmax = 0;
    for (int64_t i = 0; i < T * C; ++i) {
      kmax = std::max(kmax, std::fabs(g.k[size_t(l)][size_t(i)]));
      vmax = std::max(vmax, std::fabs(g.v[size_t(l)][size_t(i)]));
    }
    for (int64_t i = 0; i < T * C; ++i) {
      ASSERT_NEAR(g.k[size_t(l)][size_t(i)], fp16_to_fp32(rec.k[size_t(l)][size_t(i)]), 1e-3 * kmax) << "layer " << l << " key " << i;
      ASSERT_NEAR(g.v[size_t(l)][size_t(i)], fp16_to_fp32(rec.v[size_t(l)][size_t(i)]), 1e-3 * vmax) << "layer " << l << " value " << i;
    }
  }
  // Loss ~3 nats; float32 logits of ~1e-5 relative error move it by far less than 1e-3.
  EXPECT_NEAR(g.loss, cross_entropy(logits, tokens_, c.n_vocab), 1e-3);
  EXPECT_GT(g.loss, 0.5);
}

// Central differences D = (L(x + h) - L(x - h)) / 2h = L'(x) + h^2 L'''(x) / 6 + rounding.
// With h = 1e-3 of the element's scale (keys and values here are O(0.1-10)), the truncation term
// is ~1e-7 relative (L''' ~ L' / scale^2); the rounding term is eps(L) / h ~ 1e-13 / 1e-3 =
// 1e-10 absolute (L ~ 3 in float64 after ~1e6 accumulated roundings of 1e-16). Gradients of
// single elements here are 1e-7..1e-2, so |g - D| <= 1e-4 |D| + 1e-9 holds with margins of 100x
// and 10x; a wrong backward (a missing RoPE or norm term) is off by O(1) relative.
TEST_F(Fisher, GradientsMatchFiniteDifferences) {
  const ModelConfig& c = model_->config();
  const int64_t T = int64_t(tokens_.size()), C = c.kv_width();
  const KvGradientModel gm(*model_);
  const KvGradients g = gm.gradients(tokens_);
  ASSERT_EQ(g.dk.size(), size_t(c.n_layers));
  std::mt19937_64 rng(12);
  const int layers[] = {0, c.n_layers / 2, c.n_layers - 1};
  int checked = 0, nonzero = 0;
  double worst = 0;
  for (int l : layers) {
    for (int e = 0; e < 4; ++e) {
      KvPerturbation p;
      p.layer = l;
      p.value = e >= 2;
      p.token = int64_t(rng() % uint64_t(T - 1));  // the last token's key and value reach no scored position
      p.channel = int64_t(rng() % uint64_t(C));
      const auto& x = p.value ? g.v[size_t(l)] : g.k[size_t(l)];
      const double grad = (p.value ? g.dv : g.dk)[size_t(l)][size_t(p.token * C + p.channel)];
      const double h = 1e-3 * std::max(1.0, std::fabs(x[size_t(p.token * C + p.channel)]));
      p.delta = h;
      const double up = gm.loss(tokens_, &p);
      p.delta = -h;
      const double down = gm.loss(tokens_, &p);
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR(grad, fd, 1e-4 * std::fabs(fd) + 1e-9)
          << "layer " << l << (p.value ? " value" : " key") << " token " << p.token << " channel " << p.channel;
      worst = std::max(worst, std::fabs(grad - fd) / (std::fabs(fd) + 1e-12));
      ++checked;
      if (std::fabs(fd) > 1e-7) ++nonzero;
      std::printf("l%d %c t%ld c%ld grad %.6e fd %.6e\n", l, p.value ? 'v' : 'k', long(p.token), long(p.channel), grad, fd);
    }
  }
  std::printf("worst relative difference of the gradient from central differences: %.3g\n", worst);
  EXPECT_EQ(checked, 12);
  EXPECT_GE(nonzero, 9) << "the chosen elements should mostly matter to the loss";
  // The unperturbed loss equals the gradient run's.
  EXPECT_NEAR(gm.loss(tokens_), g.loss, 1e-12);
}

// The float32 variant (what calibration runs) against the float64 one: the squared gradients,
// summed per layer and stream (the scale the k-means sees), agree to 1e-3 -- float32 rounding
// (6e-8 per operation) grows to ~1e-5 relative through the 30 layers' products.
TEST_F(Fisher, Float32AgreesWithFloat64) {
  const KvGradients a = KvGradientModel(*model_).gradients(tokens_);
  const KvGradients b = KvGradientModel(*model_, KvGradientPrecision::kFloat32).gradients(tokens_);
  EXPECT_NEAR(a.loss, b.loss, 1e-4 * a.loss);
  for (size_t l = 0; l < a.dk.size(); ++l)
    for (int stream = 0; stream < 2; ++stream) {
      const auto& x = stream ? a.dv[l] : a.dk[l];
      const auto& y = stream ? b.dv[l] : b.dk[l];
      double fx = 0, diff = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        fx += x[i] * x[i];
        diff += (x[i] - y[i]) * (x[i] - y[i]);
      }
      EXPECT_LT(std::sqrt(diff / fx), 1e-3) << "layer " << l << (stream ? " values" : " keys");
    }
}

TEST_F(Fisher, RefusesBadWindows) {
  const KvGradientModel gm(*model_);
  EXPECT_THROW(gm.loss(std::vector<int32_t>{1}), Error);
  EXPECT_THROW(gm.loss(std::vector<int32_t>{1, int32_t(model_->config().n_vocab)}), Error);
  KvPerturbation p;
  p.layer = model_->config().n_layers;
  EXPECT_THROW(gm.loss(tokens_, &p), Error);
}

}  // namespace
}  // namespace aquakv
