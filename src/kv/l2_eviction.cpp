// L2-norm eviction around any cache format (kv/eviction.h).
#include "aquakv/kv/eviction.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <vector>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/sink_buffer_stack.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

constexpr const char* kUsage = "l2evict:KEEP[,p=N][,r=N][,e=N]+FORMAT";

class L2EvictCache final : public KvCache {
 public:
  L2EvictCache(const L2EvictOptions& opt, std::unique_ptr<KvCache> inner) : opt_(opt), inner_(std::move(inner)) {
    if (!inner_) fail("--kv l2evict: no format to wrap");
    if (!inner_->can_drop_rows())
      fail("--kv l2evict: format {} cannot drop single rows (e.g. codes in multi-row blocks)", inner_->name());
    if (!(opt_.keep > 0.0 && opt_.keep <= 1.0)) fail("--kv l2evict: keep ratio must be in (0, 1], got {}", opt_.keep);
    if (opt_.sinks < 0 || opt_.recent < 0 || opt_.slack < 0)
      fail("--kv l2evict: p, r and e must be >= 0 (got p={}, r={}, e={})", opt_.sinks, opt_.recent, opt_.slack);
    name_ = fmt::format("l2evict:{:g},p={},r={},e={}+{}", opt_.keep, opt_.sinks, opt_.recent, opt_.slack, inner_->name());
    for (int i = 0; i < inner_->n_seqs(); ++i) seqs_.emplace_back();
  }

  const KvShape& shape() const override { return inner_->shape(); }
  std::string name() const override { return name_; }
  int add_sequence() override {
    const int id = inner_->add_sequence();
    seqs_.resize(size_t(id) + 1);
    return id;
  }
  int n_seqs() const override { return inner_->n_seqs(); }
  void clear(int seq) override {
    inner_->clear(seq);
    seqs_[size_t(seq)] = {};
  }
  int64_t n_tokens(int seq) const override { return inner_->n_tokens(seq); }

  void begin_step(int seq, int64_t n) override {
    inner_->begin_step(seq, n);
    cur_ = seq;
    step_p0_ = inner_->n_tokens(seq);
    step_score_.assign(size_t(n), 0.0);
  }
  // Scores this step's rows: ln ||k|| summed over layers (RoPE turns pairs of channels, so the
  // norm before RoPE is the norm the attention sees).
  void append(int layer, const float* k, const float* v) override {
    const int64_t C = shape().width();
    for (size_t t = 0; t < step_score_.size(); ++t) {
      double n2 = 0.0;
      for (int64_t c = 0; c < C; ++c) n2 += double(k[int64_t(t) * C + c]) * double(k[int64_t(t) * C + c]);
      step_score_[t] += 0.5 * std::log(n2);
    }
    inner_->append(layer, k, v);
  }
  void attend(int layer, const KvAttention& a) override { inner_->attend(layer, a); }
  KvView read(int layer) override { return inner_->read(layer); }
  void end_step() override {
    inner_->end_step();
    Seq& s = seqs_[size_t(cur_)];
    for (size_t t = 0; t < step_score_.size(); ++t) {
      s.pos.push_back(int32_t(step_p0_ + int64_t(t)));
      s.score.push_back(step_score_[t]);
    }
    step_score_.clear();
    evict(cur_);
  }

  int64_t live_bytes() const override { return inner_->live_bytes(); }
  int64_t fixed_bytes() const override { return inner_->fixed_bytes(); }
  // The wrapped format's report counts per original value (dropped rows count zero bits).
  std::vector<KvBitsTerm> bits_report(int seq) const override { return inner_->bits_report(seq); }

  void save_state(int, KvStateOut&) const override {
    fail("kv cache {}: eviction policies cannot save a sequence (its row scores are not in session files)", name_);
  }
  bool can_drop_rows() const override { return true; }
  int64_t truncate(int seq, int64_t n) override {
    if (n >= n_tokens(seq)) return n_tokens(seq);
    clear(seq);
    return 0;
  }
  void drop_rows(int seq, std::span<const int32_t> positions) override {
    inner_->drop_rows(seq, positions);
    Seq& s = seqs_[size_t(seq)];
    size_t out = 0, j = 0;
    for (size_t i = 0; i < s.pos.size(); ++i) {
      while (j < positions.size() && positions[j] < s.pos[i]) ++j;
      if (j < positions.size() && positions[j] == s.pos[i]) continue;
      s.pos[out] = s.pos[i];
      s.score[out++] = s.score[i];
    }
    s.pos.resize(out);
    s.score.resize(out);
  }

 private:
  struct Seq {
    std::vector<int32_t> pos;   // positions of the rows held, ascending
    std::vector<double> score;  // their scores
  };

  // The rule of kv/eviction.h.
  void evict(int seq) {
    Seq& s = seqs_[size_t(seq)];
    const int64_t T = inner_->n_tokens(seq), held = int64_t(s.pos.size());
    const int64_t target = int64_t(std::ceil(opt_.keep * double(T)));
    if (held - target <= opt_.slack) return;
    std::vector<size_t> cand;
    for (size_t i = 0; i < s.pos.size(); ++i)
      if (s.pos[i] >= opt_.sinks && s.pos[i] < T - opt_.recent) cand.push_back(i);
    const size_t n_drop = size_t(std::min<int64_t>(held - target, int64_t(cand.size())));
    if (n_drop == 0) return;
    std::partial_sort(cand.begin(), cand.begin() + std::ptrdiff_t(n_drop), cand.end(), [&](size_t a, size_t b) {
      return s.score[a] != s.score[b] ? s.score[a] > s.score[b] : s.pos[a] < s.pos[b];
    });
    std::vector<int32_t> drop(n_drop);
    for (size_t i = 0; i < n_drop; ++i) drop[i] = s.pos[cand[i]];
    std::sort(drop.begin(), drop.end());
    drop_rows(seq, drop);
  }

  L2EvictOptions opt_;
  std::unique_ptr<KvCache> inner_;
  std::string name_;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_p0_ = 0;
  std::vector<double> step_score_;
};

}  // namespace

L2EvictOptions parse_l2evict_options(const std::string& text, const L2EvictOptions& defaults) {
  L2EvictOptions o = defaults;
  const std::string keep = parse_spec_options(text, "l2evict", kUsage, [&](const std::string& key, const std::string& val) {
    if (key == "p") o.sinks = parse_spec_count("l2evict", "p=", val);
    else if (key == "r") o.recent = parse_spec_count("l2evict", "r=", val);
    else if (key == "e") o.slack = parse_spec_count("l2evict", "e=", val);
    else fail("--kv l2evict: unknown option '{}={}' (known: p=, r=, e=)", key, val);
  });
  double x = 0.0;
  const auto r = std::from_chars(keep.data(), keep.data() + keep.size(), x);
  if (keep.empty() || r.ec != std::errc() || r.ptr != keep.data() + keep.size() || !(x > 0.0 && x <= 1.0))
    fail("--kv l2evict: keep ratio must be a number in (0, 1], got '{}' ({})", keep, kUsage);
  o.keep = x;
  return o;
}

std::unique_ptr<KvCache> make_l2evict_cache(const L2EvictOptions& opt, std::unique_ptr<KvCache> inner) {
  return std::make_unique<L2EvictCache>(opt, std::move(inner));
}

std::unique_ptr<KvCache> make_l2evict_from_spec(const std::string& args, const KvShape& shape) {
  const size_t plus = args.find('+');
  if (plus == std::string::npos || plus + 1 == args.size())
    fail("--kv l2evict: expected {}, got 'l2evict:{}'", kUsage, args);
  const L2EvictOptions opt = parse_l2evict_options(args.substr(0, plus));
  return make_l2evict_cache(opt, make_cache(args.substr(plus + 1), shape));
}

}  // namespace aquakv
