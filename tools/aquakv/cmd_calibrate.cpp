// `aquakv calibrate`: fits AQUA-KV cross-layer predictors for a model and writes an adapter file
// (docs/ADAPTERS.md), or with --method kvquant the KVQuant tables (kv/quant_tables.h). Prints
// progress, the per-layer fit table, wall time and peak memory.
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "aquakv/calib/calibrate.h"
#include "aquakv/calib/cq_fit.h"
#include "aquakv/calib/kvquant_fit.h"
#include "aquakv/calib/kvsharer_fit.h"
#include "aquakv/calib/lorc_fit.h"
#include "aquakv/kv/adapters.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "command.h"
#include "progress.h"

namespace aquakv::cli {
namespace {

struct Args {
  CalibrateOptions o;
  std::string out;
  std::string json_out;
  CLI::Option* json_opt = nullptr;
  bool f16 = false;
  bool quiet = false;
  std::string method = "aquakv";
  std::string plan_proxy = "attention";
  std::string channel_scales = "none";
  std::string plan_norm = "none";
  KvQuantFitOptions kvq;
  CqFitOptions cq;
  double bits = 0;  // 0: the method's default (aquakv: no bit plan)
  bool fisher = false;  // kvquant / cq: k-means weighted by Fisher information
  std::string datatype = "kmeans";  // kvquant: kmeans or uniform (ablation)
  KvSharerFitOptions share;
  LorcFitOptions lorc;
  std::string lorc_schedule = "progressive";
  std::string lorc_streams = "both";
  bool lorc_center = false;
  std::string predictor_inputs = "narrow";
  CLI::Option* tokens_opt = nullptr;
  CLI::Option* window_opt = nullptr;
};

// --method kvsharer: the layer-sharing search, its log, the plan file.
int run_kvsharer(Args& a) {
  const auto t0 = std::chrono::steady_clock::now();
  // Each candidate plan re-runs the calibration text: a smaller default than the fits'.
  if (a.tokens_opt->count() == 0) a.o.tokens = 2048;
  if (a.window_opt->count() == 0) a.o.window = 512;
  ProgressBar bar(a.quiet);
  KvSharerSearch s;
  LayerSharePlan plan = fit_kvsharer(a.o, a.share, &s, [&](const char* stage, int64_t done, int64_t total) { bar(stage, done, total); });
  save_layer_share_plan(plan, a.out);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("pair (j reads i)  distance  similarity  accepted\n");
  for (const auto& t : s.trials)
    std::printf("%3d <- %-3d      %9.4f  %10.5f  %s\n", t.j, t.i, t.distance, t.similarity, t.accepted ? "yes" : "no");
  std::printf("wrote %s (%d of %lld layers shared, %zu candidates tried, threshold %g)\n", a.out.c_str(), s.n_shared(),
              (long long)plan.model.n_layers, s.trials.size(), a.share.search.threshold);
  std::printf("wall time %.1f s, peak memory %.0f MiB\n", total_s, double(peak_rss_bytes()) / (1 << 20));
  if (a.json_opt->count() > 0) write_file_atomic(a.json_out, plan.notes + "\n", "--json");
  return 0;
}

// --method lorc: SVD of every layer's K/V projections, the rank schedule, the plan file.
int run_lorc(Args& a) {
  const auto t0 = std::chrono::steady_clock::now();
  a.lorc.progressive = a.lorc_schedule == "progressive";
  a.lorc.keys = a.lorc_streams != "values";
  a.lorc.values = a.lorc_streams != "keys";
  if (a.lorc_center && a.o.text_files.empty()) fail("calibrate --method lorc: --lorc-center needs -f (the text whose mean rows it keeps)");
  const auto model = Model::load(a.o.model_path);
  LorcPlan plan = fit_lorc(*model, a.lorc);
  const int64_t C = plan.model.kv_width;
  // With -f: what the plan loses on captured rows of the text (and, with --lorc-center, the
  // means it keeps).
  std::vector<std::array<double, 2>> err;
  if (!a.o.text_files.empty()) {
    CalibrateReport rep;
    ProgressBar bar(a.quiet);
    const KvSamples s = capture_samples(a.o, &rep, [&](const char* stage, int64_t done, int64_t total) { bar(stage, done, total); });
    if (a.lorc_center) lorc_center_on(plan, s);
    err = lorc_projection_error(plan, s);
  }
  save_lorc_plan(plan, a.out);
  std::printf("layer  key rank  value rank  key cond  value cond%s\n", err.empty() ? "" : "  key relMSE  value relMSE (on -f text)");
  for (size_t l = 0; l < plan.layers.size(); ++l) {
    std::printf("%5zu  %8lld  %10lld  %8.1f  %10.1f", l, (long long)plan.layers[l][0].rank, (long long)plan.layers[l][1].rank,
                plan.layers[l][0].condition, plan.layers[l][1].condition);
    if (!err.empty()) std::printf("  %10.5f  %12.5f", err[l][0], err[l][1]);
    std::printf("\n");
  }
  const double bits = 16.0 * double(plan.latent_width()) / double(2 * C * plan.model.n_layers);
  std::printf("wrote %s (%s schedule, mean share kept %.4f of %lld dimensions: %.3f bits per value as fp16 latents)\n",
              a.out.c_str(), a.lorc_schedule.c_str(), double(plan.latent_width()) / double(2 * C * plan.model.n_layers),
              (long long)C, bits);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wall time %.1f s, peak memory %.0f MiB\n", total_s, double(peak_rss_bytes()) / (1 << 20));
  if (a.json_opt->count() > 0) write_file_atomic(a.json_out, plan.notes + "\n", "--json");
  return 0;
}

// --method kvquant|cq: capture, fit the tables, write them, print the per-layer held-out errors.
int run_tables(Args& a) {
  const auto t0 = std::chrono::steady_clock::now();
  CalibrateReport rep;
  ProgressBar bar(a.quiet);
  ModelFingerprint fp;
  if (a.bits != std::floor(a.bits)) fail("calibrate --method {}: --bits must be a whole number, got {}", a.method, a.bits);
  if (a.bits) (a.method == "kvquant" ? a.kvq.bits : a.cq.bits) = int(a.bits);
  if (a.method == "kvquant" && a.kvq.bits > 8) fail("calibrate --method kvquant: --bits must be in [1, 8], got {}", a.kvq.bits);
  // Settings that depend on the model fail before the capture.
  const auto check = [&](int64_t C) {
    if (a.method == "cq" && C % a.cq.channels != 0)
      fail("calibrate --method cq: --channels {} must divide the model's KV width {}", a.cq.channels, C);
  };
  if (a.o.fisher_windows > 0 && !a.fisher) fail("calibrate: --fisher-windows needs --fisher");
  a.kvq.uniform = a.datatype == "uniform";
  if (a.kvq.uniform && a.fisher) fail("calibrate --method kvquant: --datatype uniform has no k-means to weigh (--fisher)");
  a.o.fisher = a.kvq.fisher = a.cq.fisher = a.fisher;
  const KvSamples s = capture_samples(a.o, &rep, [&](const char* stage, int64_t done, int64_t total) { bar(stage, done, total); },
                                      check, &fp);
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::pair<double, double>> err;  // key, value relative MSE per layer
  QuantTables fit;
  std::string settings;
  if (a.method == "kvquant") {
    std::vector<KvQuantLayerStats> st;
    fit = fit_kvquant(s, a.kvq, &st);
    for (const auto& l : st) err.emplace_back(l.key_rel_mse, l.value_rel_mse);
    settings = fmt::format("\"bits\": {}, \"outlier_fraction\": {}, \"outliers_per_row\": {}, \"datatype\": \"{}\"", fit.bits,
                           a.kvq.outlier_fraction, fit.outliers_per_row, a.kvq.uniform ? "uniform" : "kmeans");
  } else {
    a.cq.seed = a.o.seed;
    std::vector<CqLayerStats> st;
    fit = fit_cq(s, a.cq, &st);
    for (const auto& l : st) err.emplace_back(l.key_rel_mse, l.value_rel_mse);
    settings = fmt::format("\"bits\": {}, \"channels\": {}, \"max_rows\": {}, \"max_iters\": {}", fit.bits,
                           fit.group, a.cq.max_rows, a.cq.max_iters);
  }
  settings += fmt::format(", \"weights\": \"{}\", \"fisher_rows\": {}, \"fisher_seconds\": {}",
                          a.fisher ? "fisher" : "uniform", s.fisher_rows(), rep.fisher_seconds);
  fit.model = fp;
  const double fit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string table = "layer  key rel. MSE  value rel. MSE   (held-out rows)\n", layers_json;
  for (size_t l = 0; l < err.size(); ++l) {
    table += fmt::format("{:5}  {:12.5f}  {:14.5f}\n", l, err[l].first, err[l].second);
    layers_json += fmt::format("{}{{\"key_rel_mse\": {}, \"value_rel_mse\": {}}}", l ? ", " : "", err[l].first,
                               err[l].second);
  }
  fit.notes = fmt::format(
      "{{\"method\": \"{}\", {}, \"tokens\": {}, \"window\": {}, \"seed\": {}, \"train_rows\": {}, "
      "\"val_rows\": {}, \"capture_seconds\": {}, \"fit_seconds\": {}, \"total_seconds\": {}, \"layers\": [{}]}}",
      a.method, settings, a.o.tokens, a.o.window, a.o.seed, rep.train_rows, rep.val_rows, rep.capture_seconds, fit_s,
      total_s, layers_json);
  save_quant_tables(fit, a.out);
  std::printf("calibration: %s\n%lld windows, %lld train rows, %lld validation rows\n", rep.source.c_str(),
              (long long)rep.windows, (long long)rep.train_rows, (long long)rep.val_rows);
  std::printf("%s", table.c_str());
  std::printf("wrote %s (%s, %d bits, %.1f KiB of tables)\n", a.out.c_str(), a.method.c_str(), fit.bits,
              double(fit.bytes_in_memory()) / 1024);
  std::printf("k-means weights: %s\n", a.fisher ? "Fisher information (squared loss gradients)" : "uniform");
  std::printf("wall time %.1f s (capture %.1f s, of which Fisher %.1f s; fit %.1f s), peak memory %.0f MiB\n", total_s,
              rep.capture_seconds, rep.fisher_seconds, fit_s, double(peak_rss_bytes()) / (1 << 20));
  if (a.json_opt->count() > 0) write_file_atomic(a.json_out, fit.notes + "\n", "--json");
  return 0;
}

const CommandRegistrar reg{"calibrate", "fit AQUA-KV predictors (or KVQuant/CQ tables, or a KVSharer layer-sharing plan) and write them to a file", [](CLI::App& sub) {
  auto a = std::make_shared<Args>();
  a->o.model_path = default_model_path();
  sub.add_option("-m,--model", a->o.model_path, "GGUF model")->capture_default_str();
  sub.add_option("-f,--file", a->o.text_files,
                 "calibration text file (repeatable); none: sample text from the model itself")->check(CLI::ExistingFile);
  sub.add_option("-o,--output", a->out, "adapter file to write")->required();
  a->tokens_opt = sub.add_option("--tokens", a->o.tokens, "calibration tokens (train + validation)")->capture_default_str()->check(CLI::PositiveNumber);
  a->window_opt = sub.add_option("--window", a->o.window, "tokens per window")->capture_default_str()->check(CLI::Range(int64_t(2), int64_t(1) << 20));
  sub.add_option("--val", a->o.val_fraction, "fraction of windows held out for validation")->capture_default_str()->check(CLI::Range(0.0, 0.9));
  sub.add_option("--gen-tokens", a->o.gen_tokens, "tokens to sample from the model when no -f is given")->capture_default_str()->check(CLI::PositiveNumber);
  sub.add_option("--gen-batch", a->o.gen_batch,
                 "self-generated sequences decoded together (speed only: the text does not depend on it)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub.add_option("--gen-temp", a->o.gen_temperature, "sampling temperature for self-generated text")->capture_default_str()->check(CLI::Range(0.05, 5.0));
  sub.add_option("-k,--key-codec", a->o.key_codec, "codec of key residuals (e.g. higgs2, higgs3, higgs:2x64:g64)")->capture_default_str();
  sub.add_option("-v,--value-codec", a->o.value_codec, "codec of value residuals")->capture_default_str();
  sub.add_option("--layer0", a->o.layer0, "layer-0 policy: a codec (higgs4) or fp16 (exact)")->capture_default_str();
  sub.add_option("--rank", a->o.rank, "predictor rank, 0 = full")->capture_default_str()->check(CLI::NonNegativeNumber);
  sub.add_option("--key-rank", a->o.key_rank, "rank of the key predictors (default: --rank)")->check(CLI::NonNegativeNumber);
  sub.add_option("--value-rank", a->o.value_rank, "rank of the value predictors (default: --rank)")->check(CLI::NonNegativeNumber);
  sub.add_option("--damping", a->o.damping, "ridge damping, relative to mean(diag X^T X)")->capture_default_str()->check(CLI::Range(0.0, 1e3));
  sub.add_option("--predictor-inputs", a->predictor_inputs,
                 "narrow (keys from the previous layer's keys, values from this layer's keys and the previous layer's values) "
                 "or wide (keys also from the previous layer's values, values also from its keys); "
                 "wide-keys / wide-values: only that stream's predictors read the wide inputs")
      ->capture_default_str()->check(CLI::IsMember({"narrow", "wide", "wide-keys", "wide-values"}));
  sub.add_flag("--no-key-predictors{false}", a->o.fit_keys, "ablation: no key predictors");
  sub.add_flag("--no-value-predictors{false}", a->o.fit_values, "ablation: no value predictors");
  sub.add_option("-s,--seed", a->o.seed, "seed of window sampling / text generation")->capture_default_str();
  sub.add_option("-t,--threads", a->o.threads, "threads (0 = all cores)")->capture_default_str()->check(CLI::NonNegativeNumber);
  sub.add_flag("--f16", a->f16, "store the weights in fp16 (half the file)");
  a->json_opt = sub.add_option("--json", a->json_out, "also write the fit report as JSON to this file");
  sub.add_flag("-q,--quiet", a->quiet, "no progress output");
  sub.add_option("--method", a->method,
                 "aquakv (cross-layer predictors), kvquant (tables for --kv kvquant:FILE), cq (codebooks for --kv cq:FILE) "
                 "kvsharer (a layer-sharing plan for --kv kvsharer:FILE; default --tokens 2048 --window 512) "
                 "or lorc (low-rank K/V bases from the model's weights for --kv lorc:FILE; no text)")
      ->capture_default_str()->check(CLI::IsMember({"aquakv", "kvquant", "cq", "kvsharer", "lorc"}));
  sub.add_option("--keep", a->lorc.keep, "lorc: mean share of each layer's key/value dimensions kept, in (0, 1]")
      ->capture_default_str()->check(CLI::Range(1e-6, 1.0));
  sub.add_option("--lorc-schedule", a->lorc_schedule,
                 "lorc: progressive (ranks from the cumulative condition numbers, shallow layers kept most) or uniform")
      ->capture_default_str()->check(CLI::IsMember({"progressive", "uniform"}));
  sub.add_flag("--lorc-center", a->lorc_center,
               "lorc: offsets = the mean key/value rows of the -f text (a data-aware variant; the paper's plan is data-free)");
  sub.add_option("--lorc-streams", a->lorc_streams, "lorc: streams given low rank: both, keys or values (the other keeps every dimension)")
      ->capture_default_str()->check(CLI::IsMember({"both", "keys", "values"}));
  sub.add_option("--share-layers", a->share.search.target, "kvsharer: layers to share")->capture_default_str();
  sub.add_option("--share-threshold", a->share.search.threshold,
                 "kvsharer: least mean cosine similarity of the calibration logits to accept a sharing")->capture_default_str();
  sub.add_option("--share-trials", a->share.search.max_trials, "kvsharer: candidate pairs evaluated at most (0: all)")
      ->capture_default_str();
  sub.add_option("--share-plan", a->o.share_plan,
                 "aquakv: fit the predictors along the layers a KVSharer plan keeps (for --kv kvsharer:PLAN+aquakv:FILE)")
      ->check(CLI::ExistingFile);
  sub.add_option("--logit-stride", a->share.logit_stride, "kvsharer: compare the logits of every N-th position")
      ->capture_default_str();
  sub.add_option("--bits", a->bits,
                 "aquakv: bit plan, average bits per value (codes + scales, all layers) over per-layer key/value codecs "
                 "chosen from --plan-codecs; kvquant: bits per value (default 3); cq: bits per code (default 8)")
      ->check(CLI::Range(1.0, 12.0));
  sub.add_option("--plan-codecs", a->o.plan_codecs, "aquakv --bits: candidate residual codecs (comma-separated)")
      ->delimiter(',')->capture_default_str();
  sub.add_option("--plan-proxy", a->plan_proxy,
                 "aquakv --bits: loss proxy, attention (key errors weighed by the calibrated queries and value spread) "
                 "or mse (plain squared error)")->capture_default_str()->check(CLI::IsMember({"attention", "mse"}));
  sub.add_option("--channel-scales", a->channel_scales,
                 "calibrated per-channel scales before the residual codec: keys (weighted by the queries), values, both or none")
      ->capture_default_str()->check(CLI::IsMember({"none", "keys", "values", "both"}));
  sub.add_option("--plan-norm", a->plan_norm,
                 "aquakv --bits: none (absolute output errors) or layer (each layer's costs relative to its attention output energy)")
      ->capture_default_str()->check(CLI::IsMember({"none", "layer"}));
  sub.add_option("--plan-key-weight", a->o.plan_key_weight, "aquakv --bits: extra factor on the key proxy (ablation)")
      ->capture_default_str()->check(CLI::Range(1e-3, 1e3));
  sub.add_option("--outliers", a->kvq.outlier_fraction, "kvquant: fraction of each row kept exact")
      ->capture_default_str()->check(CLI::Range(0.0, 0.49));
  sub.add_option("--datatype", a->datatype,
                 "kvquant: kmeans (the paper's non-uniform per-layer datatype) or uniform (evenly spaced levels on the "
                 "same normalization, the ablation)")->capture_default_str()->check(CLI::IsMember({"kmeans", "uniform"}));
  sub.add_option("--channels", a->cq.channels, "cq: channels per group coded jointly (8: 1 bit per value at 8 bits)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(64)));
  sub.add_option("--cq-rows", a->cq.max_rows, "cq: training rows per layer for k-means")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub.add_flag("--fisher", a->fisher,
               "kvquant, cq: weigh the k-means by Fisher information (squared gradients of the calibration text's "
               "next-token loss with respect to each key and value; needs -f)");
  sub.add_option("--fisher-windows", a->o.fisher_windows,
                 "kvquant, cq with --fisher: training windows that get gradients and are fitted (0 = all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  return RunFn([a] {
    a->o.dtype = a->f16 ? AdapterDtype::kF16 : AdapterDtype::kF32;
    // Outputs first: a bad path fails now, not after the whole calibration.
    check_output_path(a->out, "-o");
    if (a->json_opt->count() > 0) check_output_path(a->json_out, "--json");
    if (a->json_opt->count() > 0 && a->json_out == a->out) fail("-o and --json name the same file {}", a->out);
    if (a->datatype != "kmeans" && a->method != "kvquant") fail("calibrate: --datatype applies to --method kvquant");
    if (!a->o.share_plan.empty() && a->method != "aquakv") fail("calibrate: --share-plan applies to --method aquakv");
    if (a->predictor_inputs != "narrow" && a->method != "aquakv") fail("calibrate: --predictor-inputs applies to --method aquakv");
    if ((a->o.key_rank >= 0 || a->o.value_rank >= 0) && a->method != "aquakv")
      fail("calibrate: --key-rank and --value-rank apply to --method aquakv");
    if (a->method == "kvsharer") return run_kvsharer(*a);
    if (a->method == "lorc") return run_lorc(*a);
    if (a->method != "aquakv") return run_tables(*a);
    if (a->fisher || a->o.fisher_windows > 0) fail("calibrate: --fisher applies to --method kvquant or cq");
    a->o.bits = a->bits;
    set_predictor_inputs(a->o, a->predictor_inputs);
    a->o.plan_weighted = a->plan_proxy == "attention";
    a->o.plan_layer_norm = a->plan_norm == "layer";
    a->o.scale_keys = a->channel_scales == "keys" || a->channel_scales == "both";
    a->o.scale_values = a->channel_scales == "values" || a->channel_scales == "both";
    CalibrateReport rep;
    ProgressBar bar(a->quiet);
    const Adapters ad = calibrate(a->o, &rep, [&](const char* stage, int64_t done, int64_t total) { bar(stage, done, total); });
    save_adapters(ad, a->out);
    std::printf("calibration: %s\n%lld windows, %lld train rows, %lld validation rows\n", rep.source.c_str(),
                (long long)rep.windows, (long long)rep.train_rows, (long long)rep.val_rows);
    std::printf("%s", rep.table().c_str());
    std::printf("wrote %s (%lld predictor parameters, %.1f MiB in memory)\n", a->out.c_str(),
                (long long)ad.n_params(), double(ad.bytes_in_memory()) / (1 << 20));
    if (a->o.text_files.empty()) {
      const double gen = double(rep.windows * a->o.window);
      std::printf("self-generation: %.0f tokens, %lld at a time, %.1f tokens/s (capture time)\n", gen,
                  (long long)a->o.gen_batch, gen / rep.capture_seconds);
    }
    std::printf("wall time %.1f s (capture %.1f s, fit %.1f s), peak memory %.0f MiB\n", rep.total_seconds,
                rep.capture_seconds, rep.fit_seconds, double(rep.peak_rss_bytes) / (1 << 20));
    if (a->json_opt->count() > 0) write_file_atomic(a->json_out, rep.json() + "\n", "--json");
    return 0;
  });
}};

}  // namespace
}  // namespace aquakv::cli
