// KVSharer's calibration search (calib/kvsharer_fit.h).
#include "aquakv/calib/kvsharer_fit.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include <nlohmann/json.hpp>

#include "aquakv/engine/fingerprint.h"
#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// A plain fp16 cache that also sums every appended row per layer (the averaged caches).
class MeanTap final : public KvCache {
 public:
  explicit MeanTap(const KvShape& shape)
      : inner_(make_plain_cache(shape, KvDtype::F16)),
        sum_(size_t(shape.n_layers), std::vector<double>(size_t(2 * shape.width()), 0.0)),
        rows_(size_t(shape.n_layers), 0) {}
  const KvShape& shape() const override { return inner_->shape(); }
  std::string name() const override { return "fp16 (mean tap)"; }
  int add_sequence() override { return inner_->add_sequence(); }
  int n_seqs() const override { return inner_->n_seqs(); }
  void clear(int seq) override { inner_->clear(seq); }
  int64_t n_tokens(int seq) const override { return inner_->n_tokens(seq); }
  void begin_step(int seq, int64_t n) override {
    step_n_ = n;
    inner_->begin_step(seq, n);
  }
  void append(int layer, const float* k, const float* v) override {
    const int64_t C = shape().width();
    std::vector<double>& s = sum_[size_t(layer)];
    for (int64_t t = 0; t < step_n_; ++t)
      for (int64_t c = 0; c < C; ++c) {
        s[size_t(c)] += double(k[t * C + c]);
        s[size_t(C + c)] += double(v[t * C + c]);
      }
    rows_[size_t(layer)] += step_n_;
    inner_->append(layer, k, v);
  }
  void attend(int layer, const KvAttention& a) override { inner_->attend(layer, a); }
  KvView read(int layer) override { return inner_->read(layer); }
  void end_step() override { inner_->end_step(); }
  int64_t live_bytes() const override { return inner_->live_bytes(); }
  std::vector<KvBitsTerm> bits_report(int seq) const override { return inner_->bits_report(seq); }

  // Adds this tap's sums and row counts to the totals.
  void add_to(std::vector<std::vector<double>>& sum, std::vector<int64_t>& rows) const {
    for (size_t l = 0; l < sum_.size(); ++l) {
      for (size_t c = 0; c < sum_[l].size(); ++c) sum[l][c] += sum_[l][c];
      rows[l] += rows_[l];
    }
  }

 private:
  std::unique_ptr<KvCache> inner_;
  std::vector<std::vector<double>> sum_;
  std::vector<int64_t> rows_;
  int64_t step_n_ = 0;
};

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

// Settings refused before any work (n_layers <= 0: the layer count is not known yet).
void check_options(const KvSharerSearchOptions& opt, int n_layers) {
  if (!(opt.threshold >= -1.0 && opt.threshold <= 1.0))
    fail("calibrate --method kvsharer: --share-threshold must be a cosine in [-1, 1], got {}", opt.threshold);
  if (opt.max_trials < 0) fail("calibrate --method kvsharer: --share-trials must be >= 0, got {}", opt.max_trials);
  if (opt.target < 1 || (n_layers > 0 && opt.target >= n_layers))
    fail("calibrate --method kvsharer: --share-layers must be in [1, {}], got {}", n_layers > 0 ? n_layers - 1 : 4095, opt.target);
}

}  // namespace

int KvSharerSearch::n_shared() const {
  int n = 0;
  for (int32_t s : source) n += s >= 0;
  return n;
}

std::vector<KvSharerTrial> kvsharer_rank_pairs(const std::vector<std::vector<double>>& means,
                                               const std::function<bool(int, int)>& compatible) {
  const int L = int(means.size());
  std::vector<KvSharerTrial> out;
  for (int i = 0; i < L; ++i)
    for (int j = i + 1; j < L; ++j) {
      if (!compatible(i, j)) continue;
      double d2 = 0;
      for (size_t c = 0; c < means[size_t(i)].size(); ++c) {
        const double e = means[size_t(i)][c] - means[size_t(j)][c];
        d2 += e * e;
      }
      KvSharerTrial t;
      t.i = i;
      t.j = j;
      t.distance = std::sqrt(d2);
      out.push_back(t);
    }
  std::stable_sort(out.begin(), out.end(), [](const KvSharerTrial& a, const KvSharerTrial& b) {
    if (a.distance != b.distance) return a.distance > b.distance;
    return std::tie(a.i, a.j) < std::tie(b.i, b.j);
  });
  return out;
}

KvSharerSearch kvsharer_search(int n_layers, const std::vector<KvSharerTrial>& ranked, const KvSharerSearchOptions& opt,
                               const std::function<double(const std::vector<int32_t>&)>& similarity) {
  check_options(opt, n_layers);
  KvSharerSearch s;
  s.source.assign(size_t(n_layers), -1);
  std::vector<uint8_t> is_source(size_t(n_layers), 0);
  for (const KvSharerTrial& p : ranked) {
    if (s.n_shared() >= opt.target || (opt.max_trials > 0 && int64_t(s.trials.size()) >= opt.max_trials)) break;
    AQUAKV_CHECK(p.i >= 0 && p.i < p.j && p.j < n_layers, "kvsharer: pair outside the model's layers");
    if (s.source[size_t(p.j)] >= 0 || is_source[size_t(p.j)] || s.source[size_t(p.i)] >= 0) continue;
    std::vector<int32_t> cand = s.source;
    cand[size_t(p.j)] = p.i;
    KvSharerTrial t = p;
    t.similarity = similarity(cand);
    t.accepted = t.similarity >= opt.threshold;
    if (t.accepted) {
      s.source = std::move(cand);
      is_source[size_t(p.i)] = 1;
    }
    s.trials.push_back(t);
  }
  return s;
}

LayerSharePlan fit_kvsharer(const CalibrateOptions& opt, const KvSharerFitOptions& fit, KvSharerSearch* search,
                            const std::function<void(const char*, int64_t, int64_t)>& progress) {
  if (opt.text_files.empty()) fail("calibrate --method kvsharer: needs calibration text (-f)");
  check_options(fit.search, 0);
  if (fit.logit_stride < 1) fail("calibrate --method kvsharer: the logit stride must be >= 1, got {}", fit.logit_stride);
  std::vector<std::string> texts;
  for (const auto& path : opt.text_files) texts.push_back(read_calibration_text(path));
  const auto model = Model::load(opt.model_path);
  const int L = int(model->config().n_layers);
  check_options(fit.search, L);
  const Tokenizer tok = Tokenizer::from_gguf(model->gguf());
  std::vector<int32_t> stream;
  for (const auto& t : texts) {
    const auto ids = tok.encode(t, false, false);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  const auto windows = sample_windows(stream, opt.window, std::max<int64_t>(1, opt.tokens / opt.window), opt.seed);
  const KvShape shape = model->kv_shape(opt.window);
  const int64_t V = model->config().n_vocab;
  Forward fwd(*model, opt.threads);
  std::vector<float> logits(size_t(opt.window * V));
  // The positions compared, per window: every stride-th, the last included.
  auto compared = [&](int64_t n) {
    std::vector<int64_t> p;
    for (int64_t t = n - 1; t >= 0; t -= fit.logit_stride) p.push_back(t);
    return p;
  };
  // Reference run: fp16 rows, no sharing; the averaged caches and the reference logits.
  std::vector<std::vector<double>> sum(size_t(L), std::vector<double>(size_t(2 * shape.width()), 0.0));
  std::vector<int64_t> rows(size_t(L), 0);
  std::vector<std::vector<float>> ref;  // per window, (compared positions, V)
  for (const auto& w : windows) {
    MeanTap tap(shape);
    fwd.eval(tap, tap.add_sequence(), w, logits.data(), true);
    tap.add_to(sum, rows);
    std::vector<float> r;
    for (int64_t t : compared(int64_t(w.size()))) r.insert(r.end(), logits.begin() + t * V, logits.begin() + (t + 1) * V);
    ref.push_back(std::move(r));
  }
  for (int l = 0; l < L; ++l)
    for (double& e : sum[size_t(l)]) e /= double(std::max<int64_t>(1, rows[size_t(l)]));
  const auto ranked = kvsharer_rank_pairs(sum, [&](int i, int j) { return layers_can_share(shape, i, j); });
  int64_t done = 0;
  auto similarity = [&](const std::vector<int32_t>& plan) {
    double total = 0;
    int64_t n = 0;
    for (size_t wi = 0; wi < windows.size(); ++wi) {
      auto cache = make_layer_share_cache(shape, plan, make_plain_cache(compact_share_shape(shape, plan, 0), KvDtype::F16),
                                          "kvsharer-trial");
      fwd.eval(*cache, cache->add_sequence(), windows[wi], logits.data(), true);
      const auto pos = compared(int64_t(windows[wi].size()));
      for (size_t k = 0; k < pos.size(); ++k, ++n)
        total += cosine(logits.data() + pos[k] * V, ref[wi].data() + int64_t(k) * V, V);
    }
    if (progress) progress("search", ++done, int64_t(ranked.size()));
    return n > 0 ? total / double(n) : 1.0;
  };
  KvSharerSearch s = kvsharer_search(L, ranked, fit.search, similarity);
  LayerSharePlan plan;
  plan.model = model_fingerprint(model->config().arch, model->meta_hash(), shape);
  plan.source = s.source;
  nlohmann::json j;
  j["method"] = "kvsharer";
  j["target"] = fit.search.target;
  j["threshold"] = fit.search.threshold;
  j["max_trials"] = fit.search.max_trials;
  j["tokens"] = int64_t(windows.size()) * opt.window;
  j["window"] = opt.window;
  j["seed"] = opt.seed;
  j["logit_stride"] = fit.logit_stride;
  j["shared"] = s.n_shared();
  j["source"] = s.source;
  nlohmann::json tr = nlohmann::json::array();
  for (const auto& t : s.trials)
    tr.push_back({{"i", t.i}, {"j", t.j}, {"distance", t.distance}, {"similarity", t.similarity}, {"accepted", t.accepted}});
  j["trials"] = tr;
  plan.notes = j.dump();
  if (search) *search = std::move(s);
  return plan;
}

}  // namespace aquakv
