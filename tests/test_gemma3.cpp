// Gemma 3 270M (AQUAKV_GEMMA_MODEL = scripts/fetch_model.sh gemma3-270m; skipped when unset)
// against two independent references (scripts/make_logit_goldens.py --gemma, files in
// tests/data/gemma3/): llama.cpp's logits and greedy continuations, and a float64 numpy
// evaluation of the same dequantized weights. Four prompts: plain text, Gemma's chat markers,
// mixed scripts/code, and ~870 tokens of WikiText-2 (past the 512-token sliding window).
// Rows are stored at every 64th vocabulary id (262,144 logits per position).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

struct Golden {
  nlohmann::json meta;
  std::vector<uint16_t> llama_rows;  // llama.cpp rows at every llama_stride-th id (f16)
  std::vector<float> exact_rows;     // exact rows at every exact_stride-th id (f32)
};

template <typename T>
std::vector<T> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  f.seekg(0, std::ios::end);
  std::vector<T> v(size_t(f.tellg()) / sizeof(T));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(T)));
  return v;
}

const Golden& golden() {
  static Golden g = [] {
    Golden r;
    const std::string dir = std::string(AQUAKV_TEST_DATA) + "/gemma3";
    std::ifstream js(dir + "/logits_golden.json");
    r.meta = nlohmann::json::parse(js);
    if (r.meta["prompts"][0].contains("top")) r.llama_rows = read_all<uint16_t>(dir + "/logits_golden.f16");
    r.exact_rows = read_all<float>(dir + "/logits_golden_exact.f32");
    return r;
  }();
  return g;
}

// Bounds (docs/RESULTS.md, "Gemma 3"): measured worst cases with margin. Against the exact
// reference the measured worst |d logit| is 0.012 (rms 0.002) over the 16 stored rows; 0.05
// leaves 4x margin while a real error moves logits by units (without the sliding-window mask
// past position 512 the worst difference was 9.3).
constexpr double kExactBound = 0.05;
// Against llama.cpp, whose own error dominates: it rounds activations to 8 bits before every
// quantized matmul (Q5_0, Q8_0, Q4_K, Q6_K weights here) and attention operands to f16. On the
// stored rows the bound is derived, not chosen: the golden holds llama.cpp's and the exact
// logits at the same ids, so |ours - llama| <= |ours - exact| + |exact - llama| <=
// kExactBound + |exact - llama| element by element (the triangle inequality; the first term is
// MatchesExactFloat64Reference's). At llama.cpp's top-k ids there is no exact value: there the
// p99 bound is empirical, the measured 1.18 (llama-cpp-python 0.3.36) with 1.5x margin.
constexpr double kLlamaTopP99Bound = 1.75;

int64_t argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

class Gemma3Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* p = std::getenv("AQUAKV_GEMMA_MODEL");
    if (p != nullptr && *p != '\0') model_ = Model::load(p).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "AQUAKV_GEMMA_MODEL not set";
  }
  int64_t V() const { return model_->config().n_vocab; }

  // Feeds `ids` in steps of `step` tokens and calls row(t, logits of position t) for every
  // position (a step's rows only are held: 262,144 logits per position).
  template <typename Fn>
  void scan(const std::vector<int32_t>& ids, int64_t step, Fn&& row, const std::string& kv = "fp16") {
    Forward fwd(*model_, 2);
    auto cache = make_cache(kv, model_->kv_shape(2048));
    const int seq = cache->add_sequence();
    std::vector<float> lo(size_t(step * V()));
    for (size_t i = 0; i < ids.size(); i += size_t(step)) {
      const size_t m = std::min(ids.size() - i, size_t(step));
      fwd.eval(*cache, seq, std::span<const int32_t>(ids.data() + i, m), lo.data(), true);
      for (size_t t = 0; t < m; ++t) row(i + t, lo.data() + t * size_t(V()));
    }
  }
  static std::vector<int32_t> prompt_ids(size_t i) {
    return golden().meta["prompts"][i]["ids"].get<std::vector<int32_t>>();
  }
  inline static Model* model_ = nullptr;
};

TEST_F(Gemma3Test, ConfigFromMetadata) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.arch, "gemma3");
  EXPECT_EQ(c.n_layers, 18);
  EXPECT_EQ(c.d_model, 640);
  EXPECT_EQ(c.n_ff, 2048);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.n_vocab, 262144);
  EXPECT_EQ(c.rope.type, RopeType::kNeox);
  EXPECT_EQ(c.rope.freq_base, 1000000.0);
  EXPECT_EQ(c.rope_swa.freq_base, 10000.0);
  EXPECT_FLOAT_EQ(c.embd_scale, std::sqrt(640.0f));
  EXPECT_FLOAT_EQ(c.attn_scale, 1.0f / 16.0f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_EQ(c.final_logit_softcap, 0.0f);
  EXPECT_TRUE(c.tied_output && c.qk_norm && c.post_norms && c.gelu_ffn);
  ASSERT_EQ(c.window.size(), 18u);
  for (int l = 0; l < 18; ++l) EXPECT_EQ(c.window[size_t(l)], (l % 6 == 5) ? 0 : 512) << l;
  EXPECT_EQ(model_->tok_embd().type, GgmlType::Q8_0);
  EXPECT_EQ(model_->layer(0).w_down.type, GgmlType::Q6_K);
  EXPECT_EQ(model_->layer(0).wo.type, GgmlType::Q4_K);
}

// Against the exact float64 evaluation (prefill: f32 activations times exactly dequantized
// weights, K/V stored in f16). The differences are f32 rounding and the f16 rounding of K and V
// (relative 2^-11 per element) carried through 18 layers.
// Top-1 must agree wherever the exact top-2 margin exceeds 0.2.
TEST_F(Gemma3Test, MatchesExactFloat64Reference) {
  const Golden& g = golden();
  const int64_t stride = g.meta["exact_stride"].get<int64_t>();
  const int64_t per_row = (V() + stride - 1) / stride;
  size_t row = 0;
  double worst = 0, sum_sq = 0;
  int64_t count = 0, checked_top1 = 0, positions = 0;
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto& p = g.meta["prompts"][pi];
    const auto ids = prompt_ids(pi);
    const auto full = p["full_positions"].get<std::vector<size_t>>();
    scan(ids, 128, [&](size_t t, const float* lo) {
      ++positions;
      if (p["exact_margin"][t].get<double>() > 0.2) {
        ++checked_top1;
        EXPECT_EQ(argmax(lo, V()), p["exact_top1"][t].get<int64_t>()) << "prompt " << pi << " position " << t;
      }
      if (std::find(full.begin(), full.end(), t) == full.end()) return;
      for (int64_t j = 0; j < per_row; ++j) {
        const double d = double(lo[j * stride]) - g.exact_rows[row * size_t(per_row) + size_t(j)];
        worst = std::max(worst, std::fabs(d));
        sum_sq += d * d;
        ++count;
      }
      ++row;
    });
  }
  ASSERT_EQ(row * size_t(per_row), g.exact_rows.size());
  std::printf("vs exact f64: worst |dlogit| %.5f, rms %.5f; top-1 checked at %ld of %ld positions\n",
              worst, std::sqrt(sum_sq / double(count)), long(checked_top1), long(positions));
  EXPECT_LT(worst, kExactBound);
  EXPECT_GT(checked_top1, positions * 9 / 10);
}

// Against llama.cpp, which quantizes activations to 8 bits before each quantized matmul and
// rounds attention operands to f16 (bounds argued in docs/RESULTS.md). Top-1 must agree wherever
// llama.cpp's own top-2 margin exceeds 0.5.
TEST_F(Gemma3Test, MatchesLlamaCpp) {
  const Golden& g = golden();
  if (!g.meta["prompts"][0].contains("top")) GTEST_SKIP() << "goldens made with --exact-only";
  ASSERT_EQ(g.meta["n_vocab"].get<int64_t>(), V());
  const int64_t stride = g.meta["llama_stride"].get<int64_t>();
  const int64_t per_row = (V() + stride - 1) / stride;
  size_t row = 0;
  ASSERT_EQ(g.meta["exact_stride"].get<int64_t>(), stride);  // same ids in both rows
  double worst_full = 0, sum_sq = 0, worst_llama_exact = 0;
  std::vector<double> top_err;
  int64_t n_full = 0, checked = 0, positions = 0, over = 0;
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto& p = g.meta["prompts"][pi];
    const auto ids = prompt_ids(pi);
    const auto full = p["full_positions"].get<std::vector<size_t>>();
    scan(ids, 128, [&](size_t t, const float* lo) {
      ++positions;
      const auto& top = p["top"][t];
      double e = 0;
      for (size_t j = 0; j < top["ids"].size(); ++j) {
        e = std::max(e, double(std::fabs(lo[top["ids"][j].get<int64_t>()] - top["logits"][j].get<double>())));
      }
      top_err.push_back(e);
      if (top["logits"][0].get<double>() - top["logits"][1].get<double>() > 0.5) {
        ++checked;
        EXPECT_EQ(argmax(lo, V()), top["ids"][0].get<int64_t>()) << "prompt " << pi << " position " << t;
      }
      if (std::find(full.begin(), full.end(), t) == full.end()) return;
      for (int64_t j = 0; j < per_row; ++j) {
        const size_t at = row * size_t(per_row) + size_t(j);
        const double llama = fp16_to_fp32(g.llama_rows[at]);
        const double d = lo[j * stride] - llama;
        const double slack = std::fabs(double(g.exact_rows[at]) - llama);  // llama.cpp's own error
        worst_llama_exact = std::max(worst_llama_exact, slack);
        if (std::fabs(d) > kExactBound + slack) ++over;
        worst_full = std::max(worst_full, std::fabs(d));
        sum_sq += d * d;
        ++n_full;
      }
      ++row;
    });
  }
  ASSERT_EQ(row * size_t(per_row), g.llama_rows.size());
  const double rms = std::sqrt(sum_sq / double(n_full));
  std::sort(top_err.begin(), top_err.end());
  const double top_p99 = top_err[top_err.size() * 99 / 100], top_max = top_err.back();
  std::printf("vs llama.cpp: worst |dlogit| rows %.4f (llama.cpp vs exact %.4f), top-k p99 %.4f "
              "max %.4f, rms %.4f; top-1 checked at %ld of %ld\n", worst_full, worst_llama_exact,
              top_p99, top_max, rms, long(checked), long(positions));
  EXPECT_EQ(over, 0) << "stored logits farther from llama.cpp than exact-bound + llama.cpp's own error";
  EXPECT_LT(top_p99, kLlamaTopP99Bound);
  // llama.cpp's top-2 margin exceeds 0.5 at 80% of the positions (a 262K vocabulary has more
  // near-ties than SmolLM2's 49K); top-1 must agree at all of those.
  EXPECT_GT(checked, positions * 3 / 4);
}

// Greedy decoding token by token follows llama.cpp's greedy continuation until a near-tie: at
// the first divergence llama.cpp's token must be within 0.5 of our best logit.
TEST_F(Gemma3Test, GreedyFollowsLlamaCpp) {
  const Golden& g = golden();
  if (!g.meta["prompts"][0].contains("top")) GTEST_SKIP() << "goldens made with --exact-only";
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto ids = prompt_ids(pi);
    const auto want = g.meta["prompts"][pi]["greedy"].get<std::vector<int32_t>>();
    Forward fwd(*model_, 2);
    auto cache = make_cache("fp16", model_->kv_shape(2048));
    const int seq = cache->add_sequence();
    std::vector<float> lo(static_cast<size_t>(V()));
    fwd.eval(*cache, seq, ids, lo.data(), false);
    size_t same = 0;
    for (; same < want.size(); ++same) {
      const int32_t best = int32_t(argmax(lo.data(), V()));
      if (best != want[same]) {
        EXPECT_LT(lo[size_t(best)] - lo[size_t(want[same])], 0.5) << "prompt " << pi << " step " << same;
        break;
      }
      fwd.eval(*cache, seq, std::span<const int32_t>(&best, 1), lo.data(), false);
    }
    std::printf("prompt %zu: greedy identical for %zu of %zu tokens\n", pi, same, want.size());
  }
}

}  // namespace
}  // namespace aquakv
