// Tests of eval/engine_runner.h on the real model (AQUAKV_MODEL; skipped when unset): BOS
// policy, fresh cache per window, step invariance of the perplexity protocol, bits report.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "aquakv/engine/model.h"
#include "aquakv/eval/engine_runner.h"
#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

struct Env {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Forward> fwd;
};

Env* env() {
  static Env* e = [] {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') return static_cast<Env*>(nullptr);
    auto* x = new Env;
    x->model = Model::load(m);
    x->tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(x->model->gguf()));
    x->fwd = std::make_unique<Forward>(*x->model, 2);
    return x;
  }();
  return e;
}

#define NEED_MODEL() \
  if (env() == nullptr) GTEST_SKIP() << "AQUAKV_MODEL not set"

const char* kText =
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, "
    "and the tallest structure in Paris. Its base is square, measuring 125 metres (410 ft) on "
    "each side. During its construction, the Eiffel Tower surpassed the Washington Monument to "
    "become the tallest man-made structure in the world.";

TEST(EvalEngine, BosPolicyFollowsTheVocabulary) {
  NEED_MODEL();
  const Tokenizer& tok = *env()->tok;
  const auto plain = tok.encode(kText, false, false);
  const auto autob = tokenize_for_eval(tok, kText, BosPolicy::kAuto);
  const auto on = tokenize_for_eval(tok, kText, BosPolicy::kOn);
  const auto off = tokenize_for_eval(tok, kText, BosPolicy::kOff);
  EXPECT_EQ(off, plain);
  EXPECT_EQ(autob, tok.add_bos() ? on : plain);  // SmolLM2: add_bos_token = false
  ASSERT_EQ(on.size(), plain.size() + 1);
  EXPECT_EQ(on[0], tok.bos());
  EXPECT_THROW(parse_bos_policy("yes"), Error);
}

TEST(EvalEngine, StepDoesNotChangeThePerplexityAndWindowsAreFresh) {
  NEED_MODEL();
  auto ids = env()->tok->encode(kText, false, false);
  ASSERT_GE(ids.size(), 40u);
  ids.resize(40);
  std::vector<int32_t> two = ids;
  two.insert(two.end(), ids.begin(), ids.end());  // two identical windows of 64
  const auto windows = make_windows(two, 40, 0);
  EngineLogitsModel lm(*env()->fwd, "fp16", 40);
  PerplexityOptions whole;
  whole.step = 0;
  const PerplexityResult a = run_perplexity(lm, windows, whole);
  // A fresh cache per window: identical windows give identical perplexities (a cache that kept
  // the first window would overflow its 40-token context or change the second window's logits).
  ASSERT_EQ(a.window_ppl.size(), 2u);
  EXPECT_NEAR(a.window_ppl[0], a.window_ppl[1], 1e-9 * a.window_ppl[0]);
  EXPECT_EQ(lm.cache().n_tokens(lm.seq()), 40);
  // Feeding 7 tokens at a time only changes floating-point summation order (and the matmul
  // path the engine picks for few tokens: within its tested logit tolerance).
  for (int64_t step : {7}) {
    PerplexityOptions o;
    o.step = step;
    const PerplexityResult b = run_perplexity(lm, windows, o);
    EXPECT_NEAR(std::log(b.nll.ppl()), std::log(a.nll.ppl()), 2e-3) << step;
    std::printf("step %lld: PPL %.6f vs whole window %.6f\n", static_cast<long long>(step),
                b.nll.ppl(), a.nll.ppl());
  }
  EXPECT_GT(a.nll.ppl(), 1.5);
  EXPECT_LT(a.nll.ppl(), 200.0);  // a sane model on plain English
}

TEST(EvalEngine, Fp16CacheReportsSixteenBitsMeasured) {
  NEED_MODEL();
  auto ids = env()->tok->encode(kText, false, false);
  ids.resize(40);
  EngineLogitsModel lm(*env()->fwd, "fp16", 64);
  std::vector<float> logits(static_cast<size_t>(40 * lm.n_vocab()));
  lm.forward(ids.data(), 40, logits.data());
  const CacheReport r = cache_report(lm.cache(), lm.seq());
  EXPECT_EQ(r.tokens, 40);
  EXPECT_NEAR(r.bits_per_value, 16.0, 1e-9);
  EXPECT_NEAR(r.measured_bits_per_value(), 16.0, 1e-9);
  EXPECT_NE(format_cache_report(r).find("16.000"), std::string::npos);
  EXPECT_THROW(EngineLogitsModel(*env()->fwd, "no-such-format", 64), Error);
}

TEST(EvalEngine, ModelFingerprintDependsOnContent) {
  const std::string a = testing::TempDir() + "/aquakv_fp_a", b = testing::TempDir() + "/aquakv_fp_b";
  std::ofstream(a) << "abcdef";
  std::ofstream(b) << "abcdeg";
  EXPECT_NE(model_fingerprint(a), model_fingerprint(b));
  EXPECT_EQ(model_fingerprint(a), model_fingerprint(a));
  std::remove(a.c_str());
  std::remove(b.c_str());
  EXPECT_THROW(model_fingerprint(a), Error);
}

}  // namespace
}  // namespace aquakv::eval
