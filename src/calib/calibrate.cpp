#include "aquakv/calib/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <memory>
#include <span>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "aquakv/calib/bit_plan.h"
#include "aquakv/calib/capture.h"
#include "aquakv/calib/fisher.h"
#include "aquakv/calib/ridge.h"
#include "aquakv/engine/fingerprint.h"
#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/kv/layer_share.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/hash.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int32_t sample_token(std::span<const float> logits, double temperature, std::mt19937_64& rng) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp((double(logits[i]) - mx) / temperature);
  double u = std::uniform_real_distribution<double>(0, sum)(rng);
  for (size_t i = 0; i < p.size(); ++i) {
    if ((u -= p[i]) <= 0) return int32_t(i);
  }
  return int32_t(p.size() - 1);
}

using Progress = std::function<void(const char*, int64_t, int64_t)>;

// Text windows: each is one sequence of one recording cache, prefilled in one eval.
KvSamples capture_windows(Forward& fwd, const Model& model, const std::vector<std::vector<int32_t>>& windows,
                          int64_t window, int64_t n_val, const Progress& progress) {
  const int64_t n_seq = int64_t(windows.size());
  RecordingCache cache(model.kv_shape(window));
  std::vector<int> train_ids, val_ids;
  for (int64_t w = 0; w < n_seq; ++w) {
    const int seq = cache.add_sequence();
    fwd.eval(cache, seq, windows[size_t(w)], nullptr, false);
    cache.clear(seq);
    (w < n_seq - n_val ? train_ids : val_ids).push_back(seq);
    if (progress) progress("capture", w + 1, n_seq);
  }
  return cache.take_samples(train_ids, val_ids);
}

// Sequences [g0, g0 + B) of self-generated text, decoded in lockstep: each starts from BOS (or a
// token drawn by its own generator when the model has none) and then samples one token per step
// from its logits with its own generator. One recording cache per sequence, because a decode step
// of several sequences needs one cache object each (Forward::eval_batch).
std::vector<std::unique_ptr<RecordingCache>> generate_group(Forward& fwd, const Model& model,
                                                            const CalibrateOptions& opt, int64_t g0, int64_t B) {
  const int64_t V = model.config().n_vocab;
  const int32_t bos = Tokenizer::from_gguf(model.gguf()).bos();
  std::vector<std::unique_ptr<RecordingCache>> caches;
  std::vector<KvCache*> ptrs;
  std::vector<std::mt19937_64> rngs;
  std::vector<int32_t> tok;
  for (int64_t b = 0; b < B; ++b) {
    caches.push_back(std::make_unique<RecordingCache>(model.kv_shape(opt.window)));
    caches.back()->add_sequence();
    ptrs.push_back(caches.back().get());
    rngs.emplace_back(generation_seed(opt.seed, g0 + b));
    tok.push_back(bos >= 0 ? bos : int32_t(rngs.back()() % uint64_t(V)));
  }
  const std::vector<int> seqs(size_t(B), 0);
  std::vector<float> logits(size_t(B * V));
  for (int64_t i = 0; i < opt.window; ++i) {
    const bool last = i + 1 == opt.window;  // the last token's successor is never used
    fwd.eval_batch(ptrs, seqs, tok, last ? nullptr : logits.data());
    if (last) break;
    for (int64_t b = 0; b < B; ++b)
      tok[size_t(b)] = sample_token(std::span<const float>(logits).subspan(size_t(b * V), size_t(V)), opt.gen_temperature, rngs[size_t(b)]);
  }
  for (auto& c : caches) c->clear(0);  // keeps the records, frees the f32 rows
  return caches;
}

// Appends one sequence's records to `out` (training sequences must all come first).
void append_samples(KvSamples& out, KvSamples part) {
  out.n_train += part.n_train;
  out.n_val += part.n_val;
  if (out.q2.empty()) out.q2.assign(part.q2.size(), std::vector<double>(size_t(out.width), 0.0));
  for (size_t l = 0; l < part.q2.size() && l < out.q2.size(); ++l)
    for (size_t c = 0; c < part.q2[l].size(); ++c) out.q2[l][c] += part.q2[l][c];
  out.q_rows += part.q_rows;
  out.n_kv_heads = part.n_kv_heads;
  out.q_group = part.q_group;
  for (size_t l = 0; l < size_t(out.n_layers); ++l) {
    out.k[l].insert(out.k[l].end(), part.k[l].begin(), part.k[l].end());
    out.v[l].insert(out.v[l].end(), part.v[l].begin(), part.v[l].end());
  }
}

// The Fisher information of the first n windows' keys and values (training windows, whose rows
// lead the samples in order): per window, the squared gradients of its loss (calib/fisher.h).
void add_fisher(KvSamples& s, const Model& model, const std::vector<std::vector<int32_t>>& windows, int64_t n,
                const Progress& progress) {
  const KvGradientModel gm(model, KvGradientPrecision::kFloat32);
  s.fk.assign(size_t(s.n_layers), {});
  s.fv.assign(size_t(s.n_layers), {});
  for (int64_t w = 0; w < n; ++w) {
    const KvGradients g = gm.gradients(windows[size_t(w)]);
    for (size_t l = 0; l < size_t(s.n_layers); ++l) {
      for (double x : g.dk[l]) s.fk[l].push_back(float(x * x));
      for (double x : g.dv[l]) s.fv[l].push_back(float(x * x));
    }
    if (progress) progress("fisher", w + 1, n);
  }
  AQUAKV_CHECK(s.fisher_rows() == n * int64_t(windows[0].size()) && s.fisher_rows() <= s.n_train,
               "one Fisher row per leading training row");
}

// Self-generated text: n_seq sequences of `window` tokens, opt.gen_batch at a time; the first
// n_seq - n_val train, the rest validate.
KvSamples capture_generated(Forward& fwd, const Model& model, const CalibrateOptions& opt, int64_t n_seq,
                            int64_t n_val, const Progress& progress) {
  KvSamples out;
  out.n_layers = model.config().n_layers;
  out.width = model.config().kv_width();
  out.k.resize(size_t(out.n_layers));
  out.v.resize(size_t(out.n_layers));
  const int64_t batch = opt.gen_batch;
  for (int64_t g0 = 0; g0 < n_seq; g0 += batch) {
    const int64_t B = std::min(batch, n_seq - g0);
    auto caches = generate_group(fwd, model, opt, g0, B);
    for (int64_t b = 0; b < B; ++b) {
      const bool train = g0 + b < n_seq - n_val;
      append_samples(out, caches[size_t(b)]->take_samples(train ? std::vector<int>{0} : std::vector<int>{},
                                                          train ? std::vector<int>{} : std::vector<int>{0}));
    }
    if (progress) progress("capture", g0 + B, n_seq);
  }
  return out;
}

// The bit plan's candidates: per-token codecs sharing the default key codec's group size and
// sign seed (the adapter file stores one of each, docs/ADAPTERS.md).
std::vector<std::shared_ptr<const Codec>> make_plan_codecs(const CalibrateOptions& opt, int64_t C) {
  if (!(opt.bits > 0 && opt.bits <= 16)) fail("calibrate: --bits must be in (0, 16], got {}", opt.bits);
  if (opt.plan_codecs.empty()) fail("calibrate: --bits needs candidate codecs (--plan-codecs)");
  const AdapterQuantConfig ref = aquakv_quant_config(opt.key_codec, opt.value_codec, opt.layer0, C);
  std::vector<std::shared_ptr<const Codec>> out;
  for (const auto& spec : opt.plan_codecs) {
    const AdapterQuantConfig q = aquakv_quant_config(spec, spec, opt.layer0, C);
    if (q.group_size != ref.group_size || q.signs_seed != ref.signs_seed)
      fail("calibrate: plan codec '{}' has group size {} / signs seed {}, the key codec '{}' has {} / {} (they must agree)",
           spec, q.group_size, q.signs_seed, ref.key_codec, ref.group_size, ref.signs_seed);
    out.emplace_back(make_codec(spec, C, KvStream::kAny));
    if (out.back()->block_rows() != 1) fail("calibrate: plan codec '{}' groups tokens; AQUA-KV needs a per-token codec", spec);
  }
  return out;
}

// Probe run of the chain (default codecs) measuring every candidate on every layer's residual,
// then the allocation; fills chain's per-layer codecs and the report's plan.
void plan_bits(const KvSamples& samples, const CalibrateOptions& opt,
               const std::vector<std::shared_ptr<const Codec>>& cands, ChainOptions& chain,
               CalibrateReport& rep, const Progress& progress) {
  BitPlanner planner(samples, cands, opt.plan_weighted, opt.plan_key_weight);
  planner.set_channel_scales(opt.scale_keys, opt.scale_values);
  planner.set_layer_norm(opt.plan_layer_norm);
  ChainOptions probe = chain;
  probe.on_residual = [&](int l, bool key, const std::vector<float>& y, const std::vector<float>& p) {
    planner.measure(l, key, y, p);
  };
  fit_chain(samples, probe, nullptr, [&](int d, int t) { if (progress) progress("plan", d, t); });
  const int64_t l0 = chain.layer0_codec->encoded_bytes(1);
  const auto plan = planner.plan(opt.bits, l0);
  const size_t L = plan.size();
  chain.layer_key_codecs.assign(L, nullptr);
  chain.layer_value_codecs.assign(L, nullptr);
  nlohmann::json j;
  j["bits"] = opt.bits;
  j["weighted"] = opt.plan_weighted && !samples.q2.empty();
  j["key_weight"] = opt.plan_key_weight;
  j["layer_norm"] = opt.plan_layer_norm;
  for (const auto& c : cands) j["candidates"].push_back(c->spec());
  for (size_t l = 1; l < L; ++l) {
    chain.layer_key_codecs[l] = cands[size_t(plan[l][0])];
    chain.layer_value_codecs[l] = cands[size_t(plan[l][1])];
    nlohmann::json row = {{"layer", l}, {"key", cands[size_t(plan[l][0])]->spec()},
                          {"value", cands[size_t(plan[l][1])]->spec()}};
    for (int s = 0; s < 2; ++s)
      for (size_t c = 0; c < cands.size(); ++c) row[s == 0 ? "key_cost" : "value_cost"].push_back(planner.cost(int(l), s, int(c)));
    j["layers"].push_back(row);
  }
  rep.planned = true;
  rep.plan_bits = planner.bits_per_value(plan, l0);
  j["bits_per_value"] = rep.plan_bits;
  rep.plan_json = j.dump();
}

// KvSamples::wo2 from the model's output projections (dequantized row by row).
std::vector<std::vector<double>> output_weights(const Model& m) {
  const ModelConfig& cfg = m.config();
  const int64_t hd = cfg.head_dim, C = cfg.kv_width(), group = cfg.n_heads / std::max(1, cfg.n_kv_heads);
  std::vector<std::vector<double>> out(size_t(cfg.n_layers), std::vector<double>(size_t(C), 0.0));
  std::vector<float> row;
  for (int l = 0; l < cfg.n_layers; ++l) {
    const QMatrix& wo = m.layer(l).wo;
    if (wo.cols != cfg.q_width()) return {};
    row.resize(size_t(wo.cols));
    for (int64_t r = 0; r < wo.rows; ++r) {
      dequantize_row(wo.type, wo.row(r), row.data(), wo.cols);
      for (int64_t j = 0; j < wo.cols; ++j) {
        const int64_t g = j / hd, i = j % hd;
        out[size_t(l)][size_t((g / group) * hd + i)] += double(row[size_t(j)]) * double(row[size_t(j)]);
      }
    }
  }
  return out;
}

}  // namespace

void set_predictor_inputs(CalibrateOptions& o, std::string_view name) {
  if (name != "narrow" && name != "wide" && name != "wide-keys" && name != "wide-values")
    fail("calibrate: --predictor-inputs {}: expected narrow, wide, wide-keys or wide-values", name);
  o.wide_keys = name == "wide" || name == "wide-keys";
  o.wide_values = name == "wide" || name == "wide-values";
}

const char* predictor_inputs_name(const CalibrateOptions& o) {
  return o.wide_keys ? (o.wide_values ? "wide" : "wide-keys") : (o.wide_values ? "wide-values" : "narrow");
}

// A calibration text: bounded read (util/file_io.h), UTF-8 like every tokenizer input.
std::string read_calibration_text(const std::string& path) {
  std::string s = read_file(path, "calibrate -f", ReadKind::kText);
  require_utf8(s, "calibrate -f " + path);
  return s;
}

// Windows of `window` tokens at seeded, non-overlapping positions of the joined token stream.
std::vector<std::vector<int32_t>> sample_windows(const std::vector<int32_t>& stream, int64_t window,
                                                 int64_t count, uint64_t seed) {
  const int64_t slots = int64_t(stream.size()) / window;
  if (slots < 1)
    fail("calibrate: the calibration text has {} tokens, fewer than one window of {}", stream.size(), window);
  std::vector<int64_t> order(static_cast<size_t>(slots));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  count = std::min(count, slots);
  std::vector<std::vector<int32_t>> out;
  for (int64_t i = 0; i < count; ++i) {
    const auto b = stream.begin() + order[size_t(i)] * window;
    out.emplace_back(b, b + window);
  }
  return out;
}


uint64_t generation_seed(uint64_t seed, int64_t i) {
  std::seed_seq ss{uint32_t(seed), uint32_t(seed >> 32), uint32_t(uint64_t(i)), uint32_t(uint64_t(i) >> 32)};
  return std::mt19937_64(ss)();
}

int64_t peak_rss_bytes() {
  std::string status;
  try {
    status = read_file("/proc/self/status", "", ReadKind::kText);
  } catch (const Error&) {
    return 0;  // not Linux, or /proc not mounted: the report says 0
  }
  std::istringstream f(status);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

KvSamples capture_samples(const CalibrateOptions& opt, CalibrateReport* report,
                          const std::function<void(const char*, int64_t, int64_t)>& progress,
                          const std::function<void(int64_t)>& check_width, ModelFingerprint* model_fp) {
  if (opt.window < 2) fail("calibrate: --window must be >= 2 (got {})", opt.window);
  if (opt.gen_batch < 1) fail("calibrate: --gen-batch must be >= 1 (got {})", opt.gen_batch);
  if (opt.tokens < opt.window) fail("calibrate: --tokens {} is less than one window of {}", opt.tokens, opt.window);
  if (!(opt.val_fraction >= 0 && opt.val_fraction < 1)) fail("calibrate: --val must be in [0, 1) (got {})", opt.val_fraction);
  if (opt.fisher && opt.text_files.empty())
    fail("calibrate: --fisher needs calibration text (-f): its gradients are of the text's next-token loss");
  // Texts first (small, and a bad one should fail before the model loads).
  std::vector<std::string> texts;
  for (const auto& path : opt.text_files) texts.push_back(read_calibration_text(path));
  CalibrateReport& rep = *report;
  const auto model = Model::load(opt.model_path);
  const ModelConfig& cfg = model->config();
  // The caller's checks of settings that depend on the model (before minutes of capture).
  if (check_width) check_width(cfg.kv_width());
  if (model_fp) *model_fp = model_fingerprint(model->config().arch, model->meta_hash(), model->kv_shape(opt.window));
  Forward fwd(*model, opt.threads);

  // Capture: each window (or generated sequence) is one sequence of the recording cache.
  const auto t_cap = Clock::now();
  std::vector<std::vector<int32_t>> windows;
  const bool generate = opt.text_files.empty();
  if (!generate) {
    const Tokenizer tok = Tokenizer::from_gguf(model->gguf());
    std::vector<int32_t> stream;
    rep.source = "text:";
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto ids = tok.encode(texts[i], false, false);
      stream.insert(stream.end(), ids.begin(), ids.end());
      rep.source += " " + opt.text_files[i];
    }
    windows = sample_windows(stream, opt.window, opt.tokens / opt.window, opt.seed);
  } else {
    rep.source = fmt::format("self-generated ({} tokens, temperature {}, seed {})", opt.gen_tokens, opt.gen_temperature, opt.seed);
  }
  const int64_t n_seq = generate ? std::max<int64_t>(1, opt.gen_tokens / opt.window) : int64_t(windows.size());
  const int64_t n_val = n_seq > 1 ? std::min<int64_t>(n_seq - 1, std::llround(double(n_seq) * opt.val_fraction)) : 0;
  KvSamples samples = generate ? capture_generated(fwd, *model, opt, n_seq, n_val, progress)
                               : capture_windows(fwd, *model, windows, opt.window, n_val, progress);
  if (!generate) samples.rows_per_window = opt.window;
  if (opt.fisher) {
    const auto t_f = Clock::now();
    const int64_t n_train = n_seq - n_val;
    add_fisher(samples, *model, windows, opt.fisher_windows > 0 ? std::min(opt.fisher_windows, n_train) : n_train, progress);
    rep.fisher_seconds = since(t_f);
  }
  samples.wo2 = output_weights(*model);
  rep.windows = n_seq;
  rep.capture_seconds = since(t_cap);
  rep.train_rows = samples.n_train;
  rep.val_rows = samples.n_val;
  return samples;
}

// Keeps the layers of `samples` that store rows under `plan` (a chain of fewer layers), and makes
// `model` the compact chain's identity (kv/layer_share.h: compact_share_shape).
void keep_stored_layers(KvSamples& samples, ModelFingerprint& model, const LayerSharePlan& plan, const std::string& path) {
  const ModelFingerprint& m = plan.model;
  if (m.n_layers != model.n_layers || m.kv_width != model.kv_width || m.arch != model.arch || m.meta_hash != model.meta_hash)
    fail("calibrate --share-plan {}: made for another model ({} layers, width {}, {}, {:016x}; this model: {} layers, "
         "width {}, {}, {:016x})", path, m.n_layers, m.kv_width, m.arch, m.meta_hash, model.n_layers, model.kv_width,
         model.arch, model.meta_hash);
  auto keep = [&](auto& per_layer) {
    if (per_layer.empty()) return;
    AQUAKV_CHECK(int64_t(per_layer.size()) == m.n_layers, "per-layer samples of every layer");
    size_t o = 0;
    for (size_t l = 0; l < per_layer.size(); ++l) {
      if (plan.source[l] >= 0) continue;
      if (o != l) per_layer[o] = std::move(per_layer[l]);  // (a self-move would empty it)
      ++o;
    }
    per_layer.resize(o);
  };
  keep(samples.k);
  keep(samples.v);
  keep(samples.q2);
  keep(samples.wo2);
  keep(samples.fk);
  keep(samples.fv);
  samples.n_layers = m.n_layers - plan.n_shared();
  model.n_layers = samples.n_layers;
  model.meta_hash = fnv1a64(&plan.checksum, 8, model.meta_hash);
}

Adapters calibrate(const CalibrateOptions& opt, CalibrateReport* report,
                   const std::function<void(const char*, int64_t, int64_t)>& progress) {
  const auto t_start = Clock::now();
  CalibrateReport rep;
  // Codecs first: a bad spec fails before minutes of capture.
  ChainOptions chain;
  std::vector<std::shared_ptr<const Codec>> plan_codecs;
  const auto check = [&](int64_t C) {
    // lo = -1 for the per-stream ranks: "as --rank".
    const auto check_rank = [&](const char* flag, int64_t r, int64_t lo) {
      if (r < lo || r > C)
        fail("calibrate: {} {} outside [0, {}] (0 = full rank; at most the model's KV width {})", flag, r, C, C);
    };
    check_rank("--rank", opt.rank, 0);
    check_rank("--key-rank", opt.key_rank, -1);
    check_rank("--value-rank", opt.value_rank, -1);
    chain.key_codec = std::shared_ptr<const Codec>(make_codec(opt.key_codec, C, KvStream::kKey));
    chain.value_codec = std::shared_ptr<const Codec>(make_codec(opt.value_codec, C, KvStream::kValue));
    chain.layer0_codec = std::shared_ptr<const Codec>(make_codec(opt.layer0, C, KvStream::kKey));
    if (opt.bits > 0) plan_codecs = make_plan_codecs(opt, C);
  };
  chain.rank = opt.rank;
  chain.key_rank = opt.key_rank;
  chain.value_rank = opt.value_rank;
  chain.damping = opt.damping;
  chain.fit_keys = opt.fit_keys;
  chain.fit_values = opt.fit_values;
  chain.scale_keys = opt.scale_keys;
  chain.scale_values = opt.scale_values;
  chain.wide_keys = opt.wide_keys;
  chain.wide_values = opt.wide_values;
  Adapters a;
  LayerSharePlan share;
  if (!opt.share_plan.empty()) share = load_layer_share_plan(opt.share_plan);
  KvSamples samples = capture_samples(opt, &rep, progress, check, &a.model);
  if (!opt.share_plan.empty()) keep_stored_layers(samples, a.model, share, opt.share_plan);
  const auto t_fit = Clock::now();
  a.quant = aquakv_quant_config(opt.key_codec, opt.value_codec, opt.layer0, samples.width);
  a.rank = opt.rank;
  a.dtype = opt.dtype;
  if (opt.bits > 0) plan_bits(samples, opt, plan_codecs, chain, rep, progress);
  a.layers = fit_chain(samples, chain, &rep.layers, [&](int d, int t) { if (progress) progress("fit", d, t); });
  if (opt.bits > 0)
    for (size_t l = 1; l < a.layers.size(); ++l) {
      a.layers[l].key_codec = chain.layer_key_codecs[l]->spec();
      a.layers[l].value_codec = chain.layer_value_codecs[l]->spec();
    }
  rep.fit_seconds = since(t_fit);
  rep.total_seconds = since(t_start);
  rep.peak_rss_bytes = peak_rss_bytes();
  nlohmann::json notes = nlohmann::json::parse(rep.json());
  notes["options"] = {{"tokens", opt.tokens}, {"window", opt.window}, {"val_fraction", opt.val_fraction},
                      {"key_codec", a.quant.key_codec}, {"value_codec", a.quant.value_codec},
                      {"layer0", a.quant.layer0_codec}, {"rank", opt.rank}, {"key_rank", chain.key_rank_or_default()},
                      {"value_rank", chain.value_rank_or_default()}, {"damping", opt.damping},
                      {"fit_keys", opt.fit_keys}, {"fit_values", opt.fit_values}, {"seed", opt.seed},
                      {"bits", opt.bits}, {"plan_codecs", opt.plan_codecs}, {"plan_weighted", opt.plan_weighted},
                      {"plan_key_weight", opt.plan_key_weight}, {"plan_layer_norm", opt.plan_layer_norm},
                      {"scale_keys", opt.scale_keys},
                      {"scale_values", opt.scale_values}, {"predictor_inputs", predictor_inputs_name(opt)}, {"share_plan", opt.share_plan},
                      {"share_plan_checksum", opt.share_plan.empty() ? uint64_t(0) : share.checksum}};
  a.notes = notes.dump();
  if (report) *report = rep;
  return a;
}

std::string CalibrateReport::table() const {
  std::string s = fmt::format("{:>5} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9}\n", "layer",
                              "K train", "K val", "K bits", "V train", "V val", "V bits", "K̂ err", "V̂ err");
  for (const auto& l : layers)
    s += fmt::format("{:>5} | {:>9.4f} {:>9.4f} {:>6.2f} | {:>9.4f} {:>9.4f} {:>6.2f} | {:>9.5f} {:>9.5f}\n", l.layer,
                     l.k_train, l.k_val, equivalent_bits(l.k_val), l.v_train, l.v_val,
                     equivalent_bits(l.v_val), l.k_recon_val, l.v_recon_val);
  s += "(K/V train, val: relative MSE of the predictor ||P(X)-Y||^2/||Y||^2; bits: -log4(val);\n"
       " K̂/V̂ err: relative MSE of the cache's reconstruction on validation rows)\n";
  if (planned) {
    s += fmt::format("bit plan: {:.4f} bits per value (codes + scales, all layers)\n{:>5} | {:<24} {:<24}\n",
                     plan_bits, "layer", "key codec", "value codec");
    for (const auto& l : layers) s += fmt::format("{:>5} | {:<24} {:<24}\n", l.layer, l.k_codec, l.v_codec);
  }
  return s;
}

std::string CalibrateReport::json() const {
  nlohmann::json j;
  j["source"] = source;
  j["windows"] = windows;
  j["train_rows"] = train_rows;
  j["val_rows"] = val_rows;
  j["capture_seconds"] = capture_seconds;
  j["fit_seconds"] = fit_seconds;
  j["total_seconds"] = total_seconds;
  j["peak_rss_bytes"] = peak_rss_bytes;
  auto& arr = j["layers"] = nlohmann::json::array();
  for (const auto& l : layers) {
    auto bits = [](double r) { return std::isfinite(equivalent_bits(r)) ? equivalent_bits(r) : 99.0; };
    arr.push_back({{"layer", l.layer}, {"k_train", l.k_train}, {"k_val", l.k_val}, {"k_bits", bits(l.k_val)},
                   {"v_train", l.v_train}, {"v_val", l.v_val}, {"v_bits", bits(l.v_val)},
                   {"k_recon_val", l.k_recon_val}, {"v_recon_val", l.v_recon_val}, {"seconds", l.seconds},
                   {"k_codec", l.k_codec}, {"v_codec", l.v_codec}});
  }
  if (planned) j["plan"] = nlohmann::json::parse(plan_json);
  return j.dump(1);
}

}  // namespace aquakv
