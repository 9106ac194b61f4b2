// The plain KV cache and the cache factory: step protocol, f16/f32 storage, several sequences,
// live bytes, bits report, and errors for overflow, unknown sequences and unknown formats.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

KvShape shape() {
  KvShape s;
  s.n_layers = 3;
  s.n_kv_heads = 2;
  s.head_dim = 4;
  s.max_tokens = 10;
  return s;
}

std::vector<float> rows(int64_t n, int64_t c, float base) {
  std::vector<float> v(size_t(n * c));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + 0.1f * float(i) + 1.0f / 3.0f;
  return v;
}

float at(const KvView& v, const void* p, int64_t t, int64_t c) {
  const int64_t i = t * v.row_stride + c;
  return v.dtype == KvDtype::F32 ? static_cast<const float*>(p)[i]
                                 : fp16_to_fp32(static_cast<const uint16_t*>(p)[i]);
}

TEST(PlainCache, StepsAppendAndReadBack) {
  for (const char* spec : {"fp16", "f32"}) {
    auto c = make_cache(spec, shape());
    EXPECT_EQ(c->name(), std::string(spec));
    const int a = c->add_sequence(), b = c->add_sequence();
    const int64_t C = shape().width();
    // Sequence a: steps of 3 then 2 tokens; sequence b: one step of 4 in between.
    std::vector<std::vector<float>> ka, va;
    for (int64_t n : {3, 2}) {
      c->begin_step(a, n);
      for (int l = 0; l < 3; ++l) {
        const auto k = rows(n, C, float(100 * l + 10 * c->n_tokens(a))), v = rows(n, C, -float(l));
        c->append(l, k.data(), v.data());
        const KvView view = c->read(l);
        EXPECT_EQ(view.n_tokens, c->n_tokens(a) + n);
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t j = 0; j < C; ++j) {
            const float want_k = k[size_t(t * C + j)], want_v = v[size_t(t * C + j)];
            const float gk = at(view, view.k, c->n_tokens(a) + t, j), gv = at(view, view.v, c->n_tokens(a) + t, j);
            if (view.dtype == KvDtype::F32) {
              EXPECT_EQ(gk, want_k);
              EXPECT_EQ(gv, want_v);
            } else {
              EXPECT_EQ(gk, fp16_to_fp32(fp32_to_fp16(want_k)));
              EXPECT_EQ(gv, fp16_to_fp32(fp32_to_fp16(want_v)));
            }
          }
        }
      }
      c->end_step();
      if (n == 3) {
        c->begin_step(b, 4);
        for (int l = 0; l < 3; ++l) {
          const auto k = rows(4, C, 7.0f);
          c->append(l, k.data(), k.data());
          EXPECT_EQ(c->read(l).n_tokens, 4);
        }
        c->end_step();
      }
    }
    EXPECT_EQ(c->n_tokens(a), 5);
    EXPECT_EQ(c->n_tokens(b), 4);
    const int64_t elem = std::string(spec) == "f32" ? 4 : 2;
    EXPECT_EQ(c->live_bytes(), (5 + 4) * C * 2 * 3 * elem);
    EXPECT_EQ(c->bits_report(a).at(0).bits_per_value, double(8 * elem));
    c->clear(a);
    EXPECT_EQ(c->n_tokens(a), 0);
    EXPECT_EQ(c->live_bytes(), 4 * C * 2 * 3 * elem);
  }
}

// A sliding-window layer (window 3: a query at p sees p-2..p) keeps, between steps, only the
// last 2 rows; during a step it holds them plus the step's rows, with their positions and
// values; live bytes count the rows held. Global layers keep everything.
TEST(PlainCache, SlidingWindowLayerKeepsOnlyItsWindow) {
  KvShape sh = shape();
  sh.window = {0, 3, 0};
  const int64_t C = sh.width();
  for (const char* spec : {"fp16", "f32"}) {
    auto c = make_cache(spec, sh);
    const int s = c->add_sequence();
    const int64_t elem = std::string(spec) == "f32" ? 4 : 2;
    for (int64_t step = 0; step < 4; ++step) {
      const int64_t T0 = step * 2;
      c->begin_step(s, 2);
      const auto k = rows(2, C, float(10 * step)), v = rows(2, C, float(10 * step + 5));
      for (int l = 0; l < 3; ++l) c->append(l, k.data(), v.data());
      const KvView w = c->read(1);
      const int64_t held = std::min<int64_t>(T0, 2);
      ASSERT_EQ(w.n_tokens, held + 2) << spec << " step " << step;
      for (int64_t t = 0; t < w.n_tokens; ++t) EXPECT_EQ(w.pos[t], int32_t(T0 - held + t));
      for (int64_t ch = 0; ch < C; ++ch) {  // the step's last row is this step's value row 1
        EXPECT_NEAR(at(w, w.v, w.n_tokens - 1, ch), v[size_t(C + ch)], 0.02);
      }
      EXPECT_EQ(c->read(0).n_tokens, T0 + 2);
      c->end_step();
      const int64_t T = T0 + 2;
      EXPECT_EQ(c->live_bytes(), (T + std::min<int64_t>(T, 2) + T) * C * 2 * elem) << spec << " T " << T;
    }
  }
}

TEST(PlainCache, Errors) {
  auto c = make_cache("fp16", shape());
  const int s = c->add_sequence();
  EXPECT_THROW(c->begin_step(s, 11), Error);
  EXPECT_THROW(c->begin_step(s + 1, 1), Error);
  EXPECT_THROW(c->n_tokens(-1), Error);
  EXPECT_THROW(make_cache("q3_weird", shape()), Error);
  EXPECT_THROW(make_cache("fp16:extra", shape()), Error);
  KvShape bad = shape();
  bad.head_dim = 0;
  EXPECT_THROW(make_cache("fp16", bad), Error);
}

TEST(CacheFactory, RegisteredFormatsAreFound) {
  register_cache_format({"test-format", "a test", [](const std::string& args, const KvShape& s) {
    EXPECT_EQ(args, "x=1");
    return make_plain_cache(s, KvDtype::F32);
  }, ""});
  EXPECT_EQ(make_cache("test-format:x=1", shape())->name(), "f32");
  bool listed = false;
  for (const auto& f : cache_formats()) listed |= f.name == "test-format";
  EXPECT_TRUE(listed);
}

}  // namespace
}  // namespace aquakv
