// `aquakv generate --compare` (generate_compare.h).
#include "generate_compare.h"

#include <cstdio>

#include <fmt/format.h>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "generation.h"

namespace aquakv::cli {
namespace {

// 1234567 -> "1,234,567"
std::string grouped(int64_t v) {
  const std::string digits = std::to_string(v < 0 ? -(v + 1) + uint64_t(1) : uint64_t(v));
  std::string s = v < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

int64_t leading_agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return int64_t(n);
}

}  // namespace

int compare_generation(Forward& fwd, const Tokenizer& tok, std::span<const int32_t> prompt, const std::string& echo,
                       const SamplerParams& sp, int64_t n_predict, int64_t n_ctx, const CompareCache& ref,
                       const CompareCache& test) {
  const KvShape shape = fwd.model().kv_shape(n_ctx);
  // Both caches are built before either run, so a bad spec fails before minutes of generation.
  std::unique_ptr<KvCache> ref_cache;
  try {
    ref_cache = make_cache(ref.spec, shape);
  } catch (const Error& e) {
    fail("--compare {}: {}", ref.label, e.what());
  }
  auto test_cache = make_cache(test.spec, shape);
  {
    // Warm-up: one token through a scratch cache, so the first timed run does not also pay for
    // first-touch page faults of the mapped weights and scratch allocation.
    auto scratch = make_cache("f32", fwd.model().kv_shape(1));
    fwd.eval(*scratch, scratch->add_sequence(), prompt.first(1), nullptr, false);
  }
  GenerationResult res[2];
  const CompareCache* which[2] = {&ref, &test};
  KvCache* caches[2] = {ref_cache.get(), test_cache.get()};
  for (int i = 0; i < 2; ++i) {
    std::printf("--- %s ---\n%s", which[i]->label.c_str(), echo.c_str());
    std::fflush(stdout);
    Sampler sampler(sp);  // a fresh sampler with the same seed for each run
    res[i] = generate_tokens(fwd, tok, *caches[i], prompt, sampler, n_predict, n_ctx, stdout);
  }

  std::string t = fmt::format("\nsame prompt ({} tokens) and sampling ({}) for both; agree: leading generated tokens equal to {}'s\n",
                              prompt.size(),
                              sp.temperature <= 0 ? std::string("greedy")
                                                  : fmt::format("temperature {}, seed {}", sp.temperature, sp.seed),
                              ref.label);
  size_t w = 5;
  for (const auto* c : which) w = std::max(w, c->label.size());
  t += fmt::format("{:<{}}  {:>10}  {:>13}  {:>11}  {:>10}  {:>9}  {:>5}\n", "cache", w, "bits/value", "live KV bytes",
                   "prefill t/s", "decode t/s", "generated", "agree");
  for (int i = 0; i < 2; ++i) {
    const GenerationResult& r = res[i];
    const std::string agree = i == 0 ? "-" : std::to_string(leading_agreement(res[0].tokens, r.tokens));
    t += fmt::format("{:<{}}  {:>10.2f}  {:>13}  {:>11.1f}  {:>10.1f}  {:>9}  {:>5}\n", which[i]->label, w,
                     r.bits_per_value, grouped(r.live_bytes), r.prefill_tps(), r.decode_tps(), r.tokens.size(), agree);
  }
  for (int i = 0; i < 2; ++i) {
    std::string fixed;
    if (res[i].fixed_bytes > 0)
      fixed = fmt::format(" (+ {} bytes of predictors, per model, not per token)", grouped(res[i].fixed_bytes));
    t += fmt::format("{}: {}, {} tokens cached{}\n", which[i]->label, caches[i]->name(), res[i].cache_tokens, fixed);
  }
  std::fputs(t.c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace aquakv::cli
