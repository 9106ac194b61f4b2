// Forward pass against two independent references (scripts/make_logit_goldens.py): llama.cpp's
// logits, and an exact float64 numpy evaluation of the same dequantized weights. Plus KV-cache
// consistency (one batch vs token by token vs steps of 32; independent sequences) and bad input.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "model_fixture.h"

namespace aquakv {
namespace {

struct Golden {
  nlohmann::json meta;
  std::vector<uint16_t> llama_rows;  // llama.cpp full rows (f16)
  std::vector<float> exact_rows;     // exact rows, every exact_stride-th id (f32)
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
    const std::string dir = AQUAKV_TEST_DATA;
    std::ifstream js(dir + "/logits_golden.json");
    r.meta = nlohmann::json::parse(js);
    r.llama_rows = read_all<uint16_t>(dir + "/logits_golden.f16");
    r.exact_rows = read_all<float>(dir + "/logits_golden_exact.f32");
    return r;
  }();
  return g;
}

int64_t argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

class ForwardTest : public testing::RealModelTest {
 protected:
  // All logits of `ids` run through a fresh cache in steps of `step` tokens.
  std::vector<float> run(const std::vector<int32_t>& ids, int64_t step,
                         MatmulPath path = MatmulPath::kAuto, const std::string& kv = "fp16") {
    ForwardOptions opt;
    opt.matmul = path;
    Forward fwd(*model_, 2, opt);
    auto cache = make_cache(kv, model_->kv_shape(1024));
    return testing::logits_in_steps(fwd, *cache, cache->add_sequence(), ids, step);
  }

  std::vector<int32_t> prompt_ids(size_t i) const {
    return golden().meta["prompts"][i]["ids"].get<std::vector<int32_t>>();
  }
};

TEST_F(ForwardTest, ConfigFromMetadata) {
  const ModelConfig& c = model_->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.d_model, 576);
  EXPECT_EQ(c.n_ff, 1536);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_vocab, 49152);
  EXPECT_EQ(c.n_ctx_train, 8192);
  EXPECT_EQ(c.rope.n_rot, 64);
  EXPECT_EQ(c.rope.freq_base, 100000.0);
  EXPECT_EQ(c.rope.type, RopeType::kNormal);
  EXPECT_TRUE(c.rope.freq_factors.empty());
  EXPECT_TRUE(c.tied_output);
  EXPECT_FALSE(c.has_qkv_bias);
  EXPECT_EQ(model_->tok_embd().type, GgmlType::Q8_0);
  EXPECT_EQ(model_->layer(0).wq.type, GgmlType::Q4_1);
  const KvShape ks = model_->kv_shape(100);
  EXPECT_EQ(ks.width(), 192);
  EXPECT_EQ(ks.n_layers, 30);
}

// Against the exact float64 evaluation. Our prefill multiplies f32 activations with exactly
// dequantized weights in f32 and stores K/V in f16, so the only differences are f32 rounding
// (relative ~1e-6 per op, amplified through 30 layers) and the f16 rounding of K and V
// (relative 2^-11 = 4.9e-4 per element). Measured: max |d| about 0.03 on logits of magnitude
// ~20; the bound 0.1 leaves 3x margin while a real bug (e.g. a wrong RoPE pair, a missing bias,
// a mis-scaled norm) moves logits by whole units. Top-1 must agree wherever the exact margin
// between the two best logits exceeds twice that bound.
TEST_F(ForwardTest, MatchesExactFloat64Reference) {
  const Golden& g = golden();
  const int64_t stride = g.meta["exact_stride"].get<int64_t>();
  const int64_t per_row = (V() + stride - 1) / stride;
  size_t row = 0;
  double worst = 0, sum_sq = 0;
  int64_t count = 0, checked_top1 = 0, positions = 0;
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto& p = g.meta["prompts"][pi];
    const auto ids = prompt_ids(pi);
    const std::vector<float> ours = run(ids, 512);
    for (size_t t = 0; t < ids.size(); ++t, ++positions) {
      if (p["exact_margin"][t].get<double>() <= 0.2) continue;
      ++checked_top1;
      EXPECT_EQ(argmax(ours.data() + t * V(), V()), p["exact_top1"][t].get<int64_t>()) << "prompt " << pi << " position " << t;
    }
    for (const auto& pos : p["full_positions"]) {
      const float* lo = ours.data() + pos.get<size_t>() * V();
      for (int64_t j = 0; j < per_row; ++j) {
        const double d = double(lo[j * stride]) - g.exact_rows[row * size_t(per_row) + size_t(j)];
        worst = std::max(worst, std::fabs(d));
        sum_sq += d * d;
        ++count;
      }
      ++row;
    }
  }
  ASSERT_EQ(row * size_t(per_row), g.exact_rows.size());
  std::printf("vs exact f64: worst |dlogit| %.5f, rms %.5f; top-1 checked at %ld of %ld positions\n",
              worst, std::sqrt(sum_sq / double(count)), long(checked_top1), long(positions));
  EXPECT_LT(worst, 0.1);
  EXPECT_GT(checked_top1, positions * 9 / 10);
}

// Against llama.cpp. llama.cpp quantizes activations to 8 bits (Q8_1/Q8_0 blocks) before every
// quantized matmul and rounds attention operands to f16; the exact float64 evaluation of the
// same weights differs from it by rms ~0.16 and max ~0.5 at position 0 already (where attention
// is trivial), and by up to ~1.0 over all stored rows -- the same as we do. Bounds: max 1.5,
// overall rms 0.35. Top-1 must agree wherever llama.cpp's own top-2 margin exceeds 0.5: flips
// below that are near-ties its rounding decides (seen at margins 0.10 and 0.13, where the exact
// reference sides with us).
TEST_F(ForwardTest, MatchesLlamaCpp) {
  const Golden& g = golden();
  ASSERT_EQ(g.meta["n_vocab"].get<int64_t>(), V());
  size_t row = 0;
  double worst_full = 0, sum_sq = 0;
  std::vector<double> top_err;  // per position: worst |d| over llama.cpp's top-k ids
  int64_t n_full = 0, checked = 0, positions = 0;
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto& p = g.meta["prompts"][pi];
    const auto ids = prompt_ids(pi);
    const std::vector<float> ours = run(ids, 512);
    for (size_t t = 0; t < ids.size(); ++t, ++positions) {
      const float* lo = ours.data() + t * V();
      const auto& top = p["top"][t];
      double e = 0;
      for (size_t j = 0; j < top["ids"].size(); ++j) {
        e = std::max(e, double(std::fabs(lo[top["ids"][j].get<int64_t>()] - top["logits"][j].get<double>())));
      }
      top_err.push_back(e);
      if (top["logits"][0].get<double>() - top["logits"][1].get<double>() <= 0.5) continue;
      ++checked;
      EXPECT_EQ(argmax(lo, V()), top["ids"][0].get<int64_t>()) << "prompt " << pi << " position " << t;
    }
    for (const auto& pos : p["full_positions"]) {
      const float* lo = ours.data() + pos.get<size_t>() * V();
      for (int64_t i = 0; i < V(); ++i) {
        const double d = lo[i] - fp16_to_fp32(g.llama_rows[row * size_t(V()) + size_t(i)]);
        worst_full = std::max(worst_full, std::fabs(d));
        sum_sq += d * d;
        ++n_full;
      }
      ++row;
    }
  }
  ASSERT_EQ(row * size_t(V()), g.llama_rows.size());
  const double rms = std::sqrt(sum_sq / double(n_full));
  std::sort(top_err.begin(), top_err.end());
  const double top_p99 = top_err[top_err.size() * 99 / 100], top_max = top_err.back();
  std::printf("vs llama.cpp: worst |dlogit| full rows %.4f, top-k p99 %.4f max %.4f, rms %.4f; "
              "top-1 checked at %ld of %ld\n", worst_full, top_p99, top_max, rms, long(checked),
              long(positions));
  EXPECT_LT(worst_full, 1.5);
  EXPECT_LT(top_p99, 1.5);
  // One position of prompt 2 (123) sits 2.5 above the exact reference in llama.cpp; we match
  // the exact reference there (MatchesExactFloat64Reference), hence the wider worst case.
  EXPECT_LT(top_max, 3.5);
  EXPECT_LT(rms, 0.35);
  EXPECT_GT(checked, positions * 8 / 10);
}

// Greedy decoding token by token (the dot path with 8-bit activations) follows llama.cpp's
// greedy continuation until a near-tie: at the first divergence llama.cpp's token must be within
// 0.5 of our best logit. (How long the runs agree depends on where near-ties fall; after a
// divergence the texts differ and nothing more can be compared.)
TEST_F(ForwardTest, GreedyFollowsLlamaCpp) {
  const Golden& g = golden();
  for (size_t pi = 0; pi < g.meta["prompts"].size(); ++pi) {
    const auto ids = prompt_ids(pi);
    const auto want = g.meta["prompts"][pi]["greedy"].get<std::vector<int32_t>>();
    Forward fwd(*model_, 2);
    auto cache = make_cache("fp16", model_->kv_shape(1024));
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

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

double rms_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return std::sqrt(s / double(a.size()));
}

// With the gemm strategy (f32 activations) and an f32 cache, one batch, steps of 32 and token by
// token compute the same sums in different blockings: differences are f32 rounding only
// (observed 5e-5; bound 1e-3).
TEST_F(ForwardTest, StepSizesAgreeTightly) {
  auto ids = prompt_ids(2);
  ids.resize(48);
  const auto batch = run(ids, 512, MatmulPath::kGemm, "f32");
  const auto steps = run(ids, 32, MatmulPath::kGemm, "f32");
  const auto single = run(ids, 1, MatmulPath::kGemm, "f32");
  const double d1 = max_abs_diff(batch, steps), d2 = max_abs_diff(batch, single);
  std::printf("gemm path, f32 cache: batch vs 32-steps %.2e, batch vs 1-steps %.2e\n", d1, d2);
  EXPECT_LT(d1, 1e-3);
  EXPECT_LT(d2, 1e-3);
}

// Default strategies and the fp16 cache. Rounding to f16 (K/V) and to 8 bits (activations of
// the dot path) is discontinuous: a 1e-6 difference from a different summation order can flip
// one rounding and become a 2^-11 (f16) or 1/254-of-block-max (int8) change, which then
// propagates. Steps of 32 vs one batch only see the f16 flips (observed max 0.013, bound 0.05).
// Token by token uses 8-bit activations (like llama.cpp): it is as far from the batch as
// llama.cpp is from the exact reference (observed max 1.8 / rms 0.2; bounds 2.5 / 0.35), and
// top-1 may differ only at near-ties.
TEST_F(ForwardTest, StepSizesAgreeWithDefaultPaths) {
  auto ids = prompt_ids(2);
  ids.resize(64);
  const auto batch = run(ids, 512);
  const auto steps = run(ids, 32);
  const auto single = run(ids, 1);
  std::printf("default paths: batch vs 32-steps max %.4f, batch vs 1-steps max %.4f rms %.4f\n",
              max_abs_diff(batch, steps), max_abs_diff(batch, single), rms_diff(batch, single));
  EXPECT_LT(max_abs_diff(batch, steps), 0.05);
  EXPECT_LT(max_abs_diff(batch, single), 2.5);
  EXPECT_LT(rms_diff(batch, single), 0.35);
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* a = batch.data() + t * V();
    const float* b = single.data() + t * V();
    const int64_t ia = argmax(a, V()), ib = argmax(b, V());
    if (ia != ib) {
      EXPECT_LT(std::fabs(a[ia] - a[ib]), 0.5) << "position " << t;
    }
  }
}

// Two sequences in one cache, evaluated interleaved, give bit-identical logits to separate runs.
TEST_F(ForwardTest, SequencesAreIndependent) {
  auto a = prompt_ids(2);
  a.resize(40);
  const auto b = prompt_ids(1);
  const auto ra = run(a, 8), rb = run(b, 8);
  Forward fwd(*model_, 2);
  auto cache = make_cache("fp16", model_->kv_shape(1024));
  const int sa = cache->add_sequence(), sb = cache->add_sequence();
  std::vector<float> la(a.size() * size_t(V())), lb(b.size() * size_t(V()));
  for (size_t i = 0; i < std::max(a.size(), b.size()); i += 8) {
    if (i < b.size()) fwd.eval(*cache, sb, std::span<const int32_t>(b.data() + i, std::min<size_t>(8, b.size() - i)), lb.data() + i * V(), true);
    if (i < a.size()) fwd.eval(*cache, sa, std::span<const int32_t>(a.data() + i, std::min<size_t>(8, a.size() - i)), la.data() + i * V(), true);
  }
  EXPECT_EQ(cache->n_tokens(sa), int64_t(a.size()));
  EXPECT_EQ(cache->n_tokens(sb), int64_t(b.size()));
  EXPECT_EQ(max_abs_diff(la, ra), 0.0);
  EXPECT_EQ(max_abs_diff(lb, rb), 0.0);
  // Clearing one sequence and replaying it reproduces it without touching the other.
  cache->clear(sa);
  std::vector<float> la2(a.size() * size_t(V()));
  for (size_t i = 0; i < a.size(); i += 8) {
    fwd.eval(*cache, sa, std::span<const int32_t>(a.data() + i, std::min<size_t>(8, a.size() - i)), la2.data() + i * V(), true);
  }
  EXPECT_EQ(max_abs_diff(la2, ra), 0.0);
  EXPECT_EQ(cache->n_tokens(sb), int64_t(b.size()));
}

// One decode step of B sequences at once (eval_batch) gives each sequence the logits of eval()
// with one token, bit for bit, and leaves the same K/V in its cache: sequences of different
// lengths (a prompt, then lockstep tokens), f32 caches so the cached rows are compared exactly.
TEST_F(ForwardTest, BatchedDecodeEqualsSingleEvals) {
  const std::vector<std::vector<int32_t>> prompts = {prompt_ids(0), prompt_ids(1), prompt_ids(2), {1}, {2, 3}};
  const size_t B = prompts.size();
  const int64_t kSteps = 6;
  Forward fwd(*model_, 2);
  std::vector<std::unique_ptr<KvCache>> single, batched;
  std::vector<KvCache*> ptrs;
  const std::vector<int> seqs(B, 0);
  for (size_t b = 0; b < B; ++b) {
    single.push_back(make_cache("f32", model_->kv_shape(1024)));
    batched.push_back(make_cache("f32", model_->kv_shape(1024)));
    ptrs.push_back(batched.back().get());
    for (auto* c : {single[b].get(), batched[b].get()}) {
      c->add_sequence();
      fwd.eval(*c, 0, prompts[b], nullptr, false);
    }
  }
  std::vector<float> one(static_cast<size_t>(V())), all(B * size_t(V()));
  for (int64_t i = 0; i < kSteps; ++i) {
    std::vector<int32_t> tok(B);
    for (size_t b = 0; b < B; ++b) tok[b] = int32_t((1000 + 37 * b + 101 * size_t(i)) % size_t(V()));
    fwd.eval_batch(ptrs, seqs, tok, all.data());
    for (size_t b = 0; b < B; ++b) {
      fwd.eval(*single[b], 0, std::span<const int32_t>(&tok[b], 1), one.data(), false);
      ASSERT_EQ(std::memcmp(one.data(), all.data() + b * size_t(V()), one.size() * 4), 0)
          << "step " << i << " sequence " << b << ": max diff "
          << max_abs_diff(one, std::vector<float>(all.begin() + ptrdiff_t(b * size_t(V())), all.begin() + ptrdiff_t((b + 1) * size_t(V()))));
    }
  }
  for (size_t b = 0; b < B; ++b) {
    ASSERT_EQ(batched[b]->n_tokens(0), single[b]->n_tokens(0));
    const int64_t T = single[b]->n_tokens(0);
    for (int l = 0; l < model_->config().n_layers; l += 7) {
      batched[b]->begin_step(0, 0);
      const KvView vb = batched[b]->read(l);
      const float* kp = static_cast<const float*>(vb.k);
      const float* vp = static_cast<const float*>(vb.v);
      const std::vector<float> kb(kp, kp + T * vb.row_stride), vbuf(vp, vp + T * vb.row_stride);
      batched[b]->end_step();
      single[b]->begin_step(0, 0);
      const KvView vs = single[b]->read(l);
      EXPECT_EQ(std::memcmp(kb.data(), vs.k, size_t(T * vs.row_stride) * 4), 0) << "keys, layer " << l << " sequence " << b;
      EXPECT_EQ(std::memcmp(vbuf.data(), vs.v, size_t(T * vs.row_stride) * 4), 0) << "values, layer " << l << " sequence " << b;
      single[b]->end_step();
    }
  }
}

// eval_batch refuses mismatched spans, a cache given twice, bad tokens and full contexts before
// touching any cache.
TEST_F(ForwardTest, BatchedDecodeRefusesBadInput) {
  Forward fwd(*model_, 2);
  auto a = make_cache("fp16", model_->kv_shape(4)), b = make_cache("fp16", model_->kv_shape(4));
  a->add_sequence();
  b->add_sequence();
  const std::vector<int32_t> four(4, 1);
  fwd.eval(*b, 0, four, nullptr, false);
  std::vector<KvCache*> ab = {a.get(), b.get()}, aa = {a.get(), a.get()}, a1 = {a.get()};
  const std::vector<int> seqs = {0, 0};
  const std::vector<int32_t> toks = {1, 1};
  EXPECT_THROW(fwd.eval_batch(ab, seqs, toks, nullptr), Error);  // b is full
  EXPECT_THROW(fwd.eval_batch(aa, seqs, toks, nullptr), Error);  // one step per cache
  EXPECT_THROW(fwd.eval_batch(a1, seqs, toks, nullptr), Error);  // 1 cache, 2 tokens
  EXPECT_THROW(fwd.eval_batch(a1, std::vector<int>{0}, std::vector<int32_t>{-1}, nullptr), Error);
  EXPECT_EQ(a->n_tokens(0), 0);
  EXPECT_EQ(b->n_tokens(0), 4);
  fwd.eval_batch(a1, std::vector<int>{0}, std::vector<int32_t>{1}, nullptr);
  EXPECT_EQ(a->n_tokens(0), 1);
}

TEST_F(ForwardTest, RefusesBadInput) {
  Forward fwd(*model_, 2);
  auto cache = make_cache("fp16", model_->kv_shape(8));
  const int seq = cache->add_sequence();
  std::vector<float> lo(static_cast<size_t>(V()));
  const std::vector<int32_t> bad = {1, 49152};
  EXPECT_THROW(fwd.eval(*cache, seq, bad, lo.data(), false), Error);
  const std::vector<int32_t> neg = {-1};
  EXPECT_THROW(fwd.eval(*cache, seq, neg, lo.data(), false), Error);
  EXPECT_EQ(cache->n_tokens(seq), 0);
  const std::vector<int32_t> nine(9, 1);
  EXPECT_THROW(fwd.eval(*cache, seq, nine, lo.data(), false), Error);
  EXPECT_EQ(cache->n_tokens(seq), 0);
  const std::vector<int32_t> eight(8, 1);
  fwd.eval(*cache, seq, eight, lo.data(), false);
  EXPECT_EQ(cache->n_tokens(seq), 8);
  const std::vector<int32_t> one(1, 1);
  EXPECT_THROW(fwd.eval(*cache, seq, one, lo.data(), false), Error);
  EXPECT_THROW(fwd.eval(*cache, 5, one, lo.data(), false), Error);
  KvShape wrong = model_->kv_shape(8);
  wrong.n_layers = 2;
  auto other = make_cache("fp16", wrong);
  other->add_sequence();
  EXPECT_THROW(fwd.eval(*other, 0, one, lo.data(), false), Error);
}

}  // namespace
}  // namespace aquakv
