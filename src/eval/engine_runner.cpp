// The engine as the evaluation commands use it (see include/aquakv/eval/engine_runner.h).
#include "aquakv/eval/engine_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <span>

#include "aquakv/eval/logits_file.h"
#include "aquakv/eval/stats.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/clusterkv_cache.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv::eval {

BosPolicy parse_bos_policy(const std::string& s) {
  if (s == "auto") return BosPolicy::kAuto;
  if (s == "on") return BosPolicy::kOn;
  if (s == "off") return BosPolicy::kOff;
  fail("--bos: expected auto, on or off, got '{}'", s);
}

std::vector<int32_t> tokenize_for_eval(const Tokenizer& tok, const std::string& text,
                                       BosPolicy bos) {
  std::vector<int32_t> ids = tok.encode(text, /*add_special=*/false, /*parse_special=*/false);
  const bool want = bos == BosPolicy::kOn || (bos == BosPolicy::kAuto && tok.add_bos());
  if (want) {
    if (tok.bos() == kNoToken) fail("--bos on: the model's vocabulary has no BOS token");
    ids.insert(ids.begin(), tok.bos());
  }
  return ids;
}

uint64_t model_fingerprint(const std::string& path) {
  uint64_t size = 0;
  const std::string head = read_file_head(path, "model", int64_t(4) << 20, &size);
  return fnv1a64(head.data(), int64_t(head.size()), fnv1a64(&size, 8));
}

std::string read_text_file(const std::string& path, const std::string& flag) {
  std::string s = read_file(path, flag, ReadKind::kText);
  require_utf8(s, flag + " " + path);
  return s;
}

EngineLogitsModel::EngineLogitsModel(Forward& fwd, std::string kv_spec, int64_t ctx)
    : fwd_(fwd), spec_(std::move(kv_spec)), shape_(fwd.model().kv_shape(ctx)) {
  reset();  // builds one cache now so a bad --kv spec fails before any work
}

int64_t EngineLogitsModel::n_vocab() const { return fwd_.model().config().n_vocab; }

void EngineLogitsModel::reset() {
  cache_.reset();
  cache_ = make_cache(spec_, shape_);
  seq_ = cache_->add_sequence();
}

void EngineLogitsModel::forward(const int32_t* tokens, int64_t n, float* logits) {
  fwd_.eval(*cache_, seq_, std::span<const int32_t>(tokens, size_t(n)), logits, true);
}

double CacheReport::measured_bits_per_value() const {
  const double values = double(tokens) * double(n_layers) * 2.0 * double(width);
  return values > 0 ? 8.0 * double(live_bytes) / values : 0.0;
}

CacheReport cache_report(const KvCache& cache, int seq) {
  CacheReport r;
  r.name = cache.name();
  r.terms = cache.bits_report(seq);
  for (const auto& t : r.terms) r.bits_per_value += t.bits_per_value;
  r.tokens = cache.n_tokens(seq);
  r.live_bytes = cache.live_bytes();
  r.fixed_bytes = cache.fixed_bytes();
  r.n_layers = cache.shape().n_layers;
  r.width = cache.shape().width();
  r.attended_share = clusterkv_attended_share(cache);
  return r;
}

std::string format_cache_report(const CacheReport& r) {
  std::string s = fmt::format("cache {}: {:.3f} bits per value over {} tokens\n", r.name,
                              r.bits_per_value, r.tokens);
  for (const auto& t : r.terms) s += fmt::format("  {:<24} {:8.3f} bits/value\n", t.name, t.bits_per_value);
  s += fmt::format("  live cache bytes: {} ({:.2f} MiB, {:.3f} bits/value measured; "
                   "{} layers x 2 x {} values per token)\n",
                   r.live_bytes, double(r.live_bytes) / 1048576.0, r.measured_bits_per_value(),
                   r.n_layers, r.width);
  s += fmt::format("  fixed per-model bytes: {} ({:.2f} MiB)\n", r.fixed_bytes,
                   double(r.fixed_bytes) / 1048576.0);
  if (r.attended_share >= 0)
    s += fmt::format("  rows attended: {:.1f}% of the rows the queries could see (all stay resident)\n",
                     100.0 * r.attended_share);
  return s;
}

SpeedResult measure_speed(Forward& fwd, const std::string& kv_spec,
                          const std::vector<int32_t>& tokens, int64_t ctx, int64_t n_decode,
                          int64_t batch) {
  using clock = std::chrono::steady_clock;
  if (int64_t(tokens.size()) < ctx) fail("speed: need {} tokens, have {}", ctx, tokens.size());
  n_decode = std::clamp<int64_t>(n_decode, 1, ctx - 1);
  const KvShape shape = fwd.model().kv_shape(ctx);
  const int64_t V = fwd.model().config().n_vocab;
  std::vector<float> logits(static_cast<size_t>(V));
  SpeedResult r;
  {
    auto cache = make_cache(kv_spec, shape);
    const int seq = cache->add_sequence();
    const auto t0 = clock::now();
    for (int64_t s = 0; s < ctx; s += batch) {
      const int64_t n = std::min(batch, ctx - s);
      fwd.eval(*cache, seq, std::span<const int32_t>(tokens.data() + s, size_t(n)), logits.data(), false);
    }
    r.prefill_tps = double(ctx) / std::chrono::duration<double>(clock::now() - t0).count();
  }
  {
    auto cache = make_cache(kv_spec, shape);
    const int seq = cache->add_sequence();
    const int64_t p = ctx - n_decode;
    for (int64_t s = 0; s < p; s += batch) {
      const int64_t n = std::min(batch, p - s);
      fwd.eval(*cache, seq, std::span<const int32_t>(tokens.data() + s, size_t(n)), logits.data(), false);
    }
    const auto t0 = clock::now();
    for (int64_t i = p; i < ctx; ++i)
      fwd.eval(*cache, seq, std::span<const int32_t>(tokens.data() + i, 1), logits.data(), false);
    r.decode_tps = double(n_decode) / std::chrono::duration<double>(clock::now() - t0).count();
  }
  return r;
}

std::string greedy_continuation(Forward& fwd, const std::string& kv_spec, const Tokenizer& tok,
                                const std::vector<int32_t>& prompt, int n_tokens, int64_t step) {
  if (step < 1) fail("--step {}: must be >= 1 (prompt tokens per forward call)", step);
  const int64_t V = fwd.model().config().n_vocab;
  auto cache = make_cache(kv_spec, fwd.model().kv_shape(int64_t(prompt.size()) + n_tokens));
  const int seq = cache->add_sequence();
  std::vector<float> logits(static_cast<size_t>(V));
  for (size_t s = 0; s < prompt.size(); s += size_t(step)) {
    const size_t n = std::min(size_t(step), prompt.size() - s);
    fwd.eval(*cache, seq, std::span<const int32_t>(prompt.data() + s, n), logits.data(), false);
  }
  std::vector<int32_t> out;
  for (int i = 0; i < n_tokens; ++i) {
    const int32_t next = int32_t(argmax(logits.data(), V));
    if (tok.is_eog(next)) break;
    out.push_back(next);
    if (i + 1 < n_tokens) fwd.eval(*cache, seq, std::span<const int32_t>(&next, 1), logits.data(), false);
  }
  return tok.decode(out);
}

}  // namespace aquakv::eval
