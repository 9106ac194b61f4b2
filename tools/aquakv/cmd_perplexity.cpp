// `aquakv perplexity`: PPL +- standard error over non-overlapping windows of a text, KL
// divergence against a saved 16-bit run, and the cache's bits and memory report.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "aquakv/eval/engine_runner.h"
#include "aquakv/eval/logits_file.h"
#include "aquakv/eval/perplexity.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "eval_cli.h"

namespace aquakv::cli {
namespace {

struct Args {
  std::string model, text, kv = "fp16", json, save_logits, kl_base, bos = "auto";
  CLI::Option* json_opt = nullptr;
  CLI::Option* save_opt = nullptr;
  int64_t ctx = 512, step = 32, chunks = 0;
  int logits_top = eval::kMaxTop;
  int threads = 0;
};

std::string hex64(uint64_t h) { return fmt::format("{:016x}", h); }

int run(const Args& a) {
  if (a.step < 0) fail("--step {}: must be >= 0 (0 = whole window)", a.step);
  if (a.chunks < 0) fail("--chunks {}: must be >= 0 (0 = all windows)", a.chunks);
  if (!a.save_logits.empty() && a.save_logits == a.kl_base)
    fail("--save-logits and --kl-base name the same file {}", a.save_logits);
  // Outputs first: a bad path fails now, not after minutes of evaluation.
  if (a.save_opt->count() > 0) check_output_path(a.save_logits, "--save-logits");
  if (a.json_opt->count() > 0) check_output_path(a.json, "--json");
  if (!a.json.empty() && a.json == a.save_logits)
    fail("--json and --save-logits name the same file {}", a.json);
  const eval::BosPolicy bos = eval::parse_bos_policy(a.bos);
  const std::string text = eval::read_text_file(a.text);
  // Load the base file first: a bad or mismatched file fails before minutes of compute.
  std::optional<eval::LogitsFile> base;
  if (!a.kl_base.empty()) base = eval::LogitsFile::load(a.kl_base);

  LoadedModel m = load_model(a.model, a.threads);
  const ModelConfig& cfg = m.model->config();
  if (cfg.n_ctx_train > 0 && a.ctx > cfg.n_ctx_train)
    std::fprintf(stderr, "perplexity: warning: -c %lld exceeds the model's training context %lld\n",
                 static_cast<long long>(a.ctx), static_cast<long long>(cfg.n_ctx_train));
  const auto t_tok = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = eval::tokenize_for_eval(*m.tok, text, bos);
  const double tok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_tok).count();
  const auto windows = eval::make_windows(ids, a.ctx, a.chunks);
  const bool has_bos = !ids.empty() && m.tok->bos() != kNoToken && ids[0] == m.tok->bos() &&
                       bos != eval::BosPolicy::kOff;
  std::printf("perplexity: %s, %lld tokens (BOS at start: %s) in %.2f s; %zu windows of %lld "
              "(of %lld), step %lld, kv %s, %d threads\n",
              a.text.c_str(), static_cast<long long>(ids.size()), has_bos ? "yes" : "no", tok_s,
              windows.size(), static_cast<long long>(a.ctx),
              static_cast<long long>(int64_t(ids.size()) / a.ctx), static_cast<long long>(a.step),
              a.kv.c_str(), num_threads());

  eval::LogitsRunInfo info;
  info.model = std::filesystem::path(a.model).filename().string();
  info.model_fingerprint = eval::model_fingerprint(a.model);
  info.n_vocab = cfg.n_vocab;
  info.ctx = a.ctx;
  info.rows_per_window = a.ctx - 1;
  for (const auto& w : windows) info.window_hashes.push_back(eval::hash_tokens(w.data(), a.ctx));
  info.kv_spec = a.kv;
  info.text = std::filesystem::path(a.text).filename().string();
  if (base) base->check_compatible(info, a.kl_base);
  std::optional<eval::LogitsFile> save;
  if (a.save_opt->count() > 0) save.emplace(info, a.logits_top);

  eval::EngineLogitsModel lm(*m.fwd, a.kv, a.ctx);
  eval::PerplexityOptions opt;
  opt.step = a.step;
  opt.save_logits = save ? &*save : nullptr;
  opt.kl_base = base ? &*base : nullptr;
  ProgressBar bar("perplexity");
  int64_t max_live = 0;
  opt.progress = [&](const eval::PerplexityProgress& p) {
    max_live = std::max(max_live, lm.cache().live_bytes());
    if (p.window_done) {
      bar.clear();
      std::printf("[%lld]%.4f,", static_cast<long long>(p.window + 1), p.nll->ppl());
      std::fflush(stdout);
    }
    bar.update(p.tokens_done, p.tokens_total, p.seconds, fmt::format("PPL {:.4f}", p.nll->ppl()));
  };
  const eval::PerplexityResult r = eval::run_perplexity(lm, windows, opt);
  bar.clear();
  const eval::CacheReport cr = eval::cache_report(lm.cache(), lm.seq());
  std::printf("\nFinal estimate: PPL = %.4f +/- %.5f  (%lld positions, %.1f s, %.1f tokens/s)\n",
              r.nll.ppl(), r.nll.ppl_stderr(), static_cast<long long>(r.nll.count()), r.seconds,
              double(r.tokens_fed) / r.seconds);

  nlohmann::json j;
  j["command"] = command_line();
  j["date"] = utc_now();
  j["model"] = a.model;
  j["text"] = a.text;
  j["kv"] = a.kv;
  j["ctx"] = a.ctx;
  j["step"] = a.step;
  j["threads"] = num_threads();
  j["bos"] = has_bos;
  j["n_tokens"] = ids.size();
  j["windows"] = windows.size();
  j["positions"] = r.nll.count();
  j["mean_nll"] = r.nll.mean();
  j["ppl"] = r.nll.ppl();
  j["ppl_se"] = r.nll.ppl_stderr();
  j["window_ppl"] = r.window_ppl;
  j["seconds"] = r.seconds;
  j["tokens_per_s"] = double(r.tokens_fed) / r.seconds;
  for (uint64_t h : info.window_hashes) j["window_hashes"].push_back(hex64(h));

  if (r.kl) {
    const eval::KlSummary& k = *r.kl;
    const double ratio = std::exp(r.delta_nll->mean());
    const double ratio_se = ratio * r.delta_nll->mean_stderr();
    std::printf("\n====== KL divergence against %s (kv %s) ======\n", a.kl_base.c_str(),
                base->info().kv_spec.c_str());
    std::printf("PPL(base)            : %.4f +/- %.5f\n", r.base_nll->ppl(), r.base_nll->ppl_stderr());
    std::printf("PPL ratio            : %.5f +/- %.5f\n", ratio, ratio_se);
    std::printf("Mean KLD             : %.6g +/- %.3g\n", k.mean, k.mean_stderr);
    std::printf("Median KLD           : %.6g\n", k.median);
    std::printf("99.0%%   KLD          : %.6g\n", k.p99);
    std::printf("99.9%%   KLD          : %.6g\n", k.p999);
    std::printf("Maximum KLD          : %.6g\n", k.max);
    std::printf("Same top token       : %.3f%%\n", 100 * k.same_top_rate);
    std::printf("Mean base tail mass  : %.2e (KL is a lower bound; gap <= tail mass x tail KL)\n",
                k.mean_p_rest);
    j["kl"] = {{"base", a.kl_base},         {"base_kv", base->info().kv_spec},
               {"base_ppl", r.base_nll->ppl()}, {"ppl_ratio", ratio},
               {"ppl_ratio_se", ratio_se},  {"mean", k.mean},
               {"mean_se", k.mean_stderr},  {"median", k.median},
               {"p99", k.p99},              {"p999", k.p999},
               {"max", k.max},              {"same_top", k.same_top_rate},
               {"mean_tail_mass", k.mean_p_rest}};
  }

  std::printf("\n%s", eval::format_cache_report(cr).c_str());
  std::printf("  peak live cache bytes during a window: %lld\n", static_cast<long long>(max_live));
  nlohmann::json bits = nlohmann::json::array();
  for (const auto& t : cr.terms) bits.push_back({{"name", t.name}, {"bits_per_value", t.bits_per_value}});
  j["cache"] = {{"name", cr.name},
                {"bits_per_value", cr.bits_per_value},
                {"terms", bits},
                {"tokens", cr.tokens},
                {"live_bytes", cr.live_bytes},
                {"peak_live_bytes", max_live},
                {"measured_bits_per_value", cr.measured_bits_per_value()},
                {"fixed_bytes", cr.fixed_bytes}};

  if (save) {
    save->save(a.save_logits);
    std::printf("saved base logits: %s (%lld positions)\n", a.save_logits.c_str(),
                static_cast<long long>(save->n_rows()));
  }
  if (a.json_opt->count() > 0) write_file_atomic(a.json, j.dump(2) + "\n", "--json");
  return 0;
}

const CommandRegistrar reg{
    "perplexity", "perplexity, KL divergence and cache bits over windows of a text",
    [](CLI::App& sub) {
      auto a = std::make_shared<Args>();
      a->model = default_model_path();
      sub.add_option("-m,--model", a->model, "GGUF model file")->capture_default_str();
      sub.add_option("-f,--file", a->text, "text file to evaluate")->required();
      sub.add_option("-c,--ctx", a->ctx, "window (context) size in tokens")
          ->capture_default_str()->check(CLI::Range(int64_t(2), int64_t(1) << 24));
      sub.add_option("--step", a->step, "tokens fed per forward call (0 = whole window)")
          ->capture_default_str();
      sub.add_option("--chunks", a->chunks, "evaluate only the first N windows (0 = all)")
          ->capture_default_str();
      sub.add_option("--kv", a->kv, "KV cache format")->capture_default_str();
      sub.add_option("-t,--threads", a->threads, "threads (0 = all cores)")
          ->capture_default_str()->check(CLI::NonNegativeNumber);
      sub.add_option("--bos", a->bos,
                     "BOS at the start of the text: auto (the model's add_bos_token, as "
                     "llama.cpp), on, off")->capture_default_str();
      a->json_opt = sub.add_option("--json", a->json, "write the result as JSON to this file");
      a->save_opt = sub.add_option("--save-logits", a->save_logits,
                                   "save compact base logits (run with a 16-bit cache) for later --kl-base");
      sub.add_option("--logits-top", a->logits_top,
                     "tokens kept per position by --save-logits (KL exact when >= vocab size)")
          ->capture_default_str()->check(CLI::Range(1, 65535));
      sub.add_option("--kl-base", a->kl_base, "compare with logits saved by --save-logits")
          ->check([](const std::string& v) { return v.empty() ? std::string("empty file name") : std::string(); });
      return RunFn([a] { return run(*a); });
    }};

}  // namespace
}  // namespace aquakv::cli
