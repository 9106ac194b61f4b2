// Test helper: the real model ($AQUAKV_MODEL) loaded once per test suite, every test of the
// suite skipped when the variable is unset, and all logits of a token list fed through a cache
// a few tokens per forward call. Used by the suites that run the forward pass on the model.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv::testing {

// All logits (ids.size() rows of the vocabulary) of `ids` fed to sequence `seq` of `cache`,
// `step` tokens per forward call.
inline std::vector<float> logits_in_steps(Forward& fwd, KvCache& cache, int seq,
                                          const std::vector<int32_t>& ids, int64_t step) {
  const int64_t V = fwd.model().config().n_vocab;
  std::vector<float> logits(ids.size() * size_t(V));
  for (size_t i = 0; i < ids.size(); i += size_t(step)) {
    const size_t m = std::min(ids.size() - i, size_t(step));
    fwd.eval(cache, seq, std::span<const int32_t>(ids.data() + i, m), logits.data() + i * V, true);
  }
  return logits;
}

// Base of a test suite on the real model: `model_` is loaded before the suite's first test and
// freed after its last; tests are skipped when AQUAKV_MODEL is unset.
class RealModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* p = std::getenv("AQUAKV_MODEL");
    if (p != nullptr && *p != '\0') model_ = Model::load(p).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "AQUAKV_MODEL not set";
  }
  int64_t V() const { return model_->config().n_vocab; }
  int64_t C() const { return model_->config().kv_width(); }

  inline static Model* model_ = nullptr;
};

}  // namespace aquakv::testing
