// `aquakv report`: runs a matrix of cache formats x context lengths (perplexity, KL to the
// 16-bit cache, speed, optionally passkey) and writes report.md, rows.jsonl and PNG charts.
//
// Config file (JSON; every key optional, flags given on the command line win; examples:
// bench/report_quality.json, bench/report_speed.json, docs/EVAL.md):
//   {"model": "m.gguf", "text": "wiki.txt", "kv": ["fp16", "q4_0"], "ctx": [512, 2048],
//    "chunks": 4, "step": 32, "threads": 2, "speed_ctx": [512, 2048], "decode_tokens": 32,
//    "passkey": {"lens": [1024, 2048], "depths": [0.1, 0.5, 0.9], "trials": 2},
//    "extra_rows": ["llama_cpp.jsonl"], "out": "report"}
// Files named in it (model, text, extra_rows) are relative to the config file's folder; "out"
// is relative to the current directory. With nothing to measure (no ctx, speed_ctx or passkey
// lens) the report only renders the extra rows and needs no model.
// The first kv format is the KL base and must be a 16-bit one (fp16 by default).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "aquakv/eval/engine_runner.h"
#include "aquakv/eval/passkey.h"
#include "aquakv/eval/perplexity.h"
#include "aquakv/eval/report.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "eval_cli.h"

namespace aquakv::cli {
namespace {

struct Config {
  std::string config, model, text, out = "report", bos = "auto";
  std::vector<std::string> kvs, extra;
  std::vector<int64_t> ctxs, speed_ctx, passkey_lens;
  std::vector<double> depths;
  int64_t chunks = -1, step = -1, decode_tokens = -1;
  int threads = -1, trials = -1;
};

template <typename T>
void take(const nlohmann::json& j, const char* key, T& dst, bool unset, const std::string& file) {
  if (!unset || !j.contains(key)) return;
  try {
    dst = j[key].get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("--config {}: field {}: {}", file, key, e.what());
  }
}

void apply_config_file(Config& c) {
  const std::string text = read_file(c.config, "--config", ReadKind::kText);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--config {}: not valid JSON ({})", c.config, e.what());
  }
  if (!j.is_object()) fail("--config {}: expected a JSON object", c.config);
  static const std::vector<std::string> known{"model", "text", "kv", "ctx", "chunks", "step",
      "threads", "speed_ctx", "decode_tokens", "passkey", "extra_rows", "out", "bos"};
  for (auto it = j.begin(); it != j.end(); ++it)
    if (std::find(known.begin(), known.end(), it.key()) == known.end())
      fail("--config {}: unknown field '{}'", c.config, it.key());
  take(j, "kv", c.kvs, c.kvs.empty(), c.config);
  take(j, "ctx", c.ctxs, c.ctxs.empty(), c.config);
  take(j, "chunks", c.chunks, c.chunks < 0, c.config);
  take(j, "step", c.step, c.step < 0, c.config);
  take(j, "threads", c.threads, c.threads < 0, c.config);
  take(j, "speed_ctx", c.speed_ctx, c.speed_ctx.empty(), c.config);
  take(j, "decode_tokens", c.decode_tokens, c.decode_tokens < 0, c.config);
  take(j, "out", c.out, c.out == "report", c.config);
  take(j, "bos", c.bos, c.bos == "auto", c.config);
  // File names in the config are relative to the config file's folder.
  const std::filesystem::path base = std::filesystem::path(c.config).parent_path();
  auto rel = [&](const nlohmann::json& v) {
    if (!v.is_string()) fail("--config {}: expected a file name string, got {}", c.config, v.dump());
    const std::filesystem::path p(v.get<std::string>());
    return (p.is_absolute() ? p : base / p).lexically_normal().string();
  };
  if (j.contains("model") && c.model.empty()) c.model = rel(j["model"]);
  if (j.contains("text") && c.text.empty()) c.text = rel(j["text"]);
  if (j.contains("extra_rows") && c.extra.empty()) {
    if (!j["extra_rows"].is_array()) fail("--config {}: extra_rows must be a list", c.config);
    for (const auto& e : j["extra_rows"]) c.extra.push_back(rel(e));
  }
  if (j.contains("passkey")) {
    const auto& p = j["passkey"];
    take(p, "lens", c.passkey_lens, c.passkey_lens.empty(), c.config);
    take(p, "depths", c.depths, c.depths.empty(), c.config);
    take(p, "trials", c.trials, c.trials < 0, c.config);
  }
}

void apply_defaults(Config& c) {
  if (c.kvs.empty()) c.kvs = {"fp16"};
  if (c.chunks < 0) c.chunks = 4;
  if (c.step < 0) c.step = 32;
  if (c.threads < 0) c.threads = 0;
  if (c.decode_tokens < 0) c.decode_tokens = 32;
  if (c.trials < 0) c.trials = 2;
  if (c.depths.empty()) c.depths = {0.1, 0.5, 0.9};
}

// What the engine measured, and on what.
struct Measured {
  std::vector<eval::ReportRow> rows;
  std::vector<eval::PasskeyCell> cells;
  std::string model_name;
  size_t text_tokens = 0;
};

// Perplexity and KL rows: every kv format on the same windows of every context.
void run_quality(const Config& c, LoadedModel& m, const std::vector<int32_t>& ids, Measured& out) {
  const int64_t V = m.model->config().n_vocab;
  for (int64_t ctx : c.ctxs) {
    const auto windows = eval::make_windows(ids, ctx, c.chunks);
    eval::LogitsRunInfo info;
    info.n_vocab = V;
    info.ctx = ctx;
    info.rows_per_window = ctx - 1;
    for (const auto& w : windows) info.window_hashes.push_back(eval::hash_tokens(w.data(), ctx));
    eval::LogitsFile base(info);
    for (size_t k = 0; k < c.kvs.size(); ++k) {
      std::fprintf(stderr, "report: perplexity kv %s ctx %lld (%zu windows)\n", c.kvs[k].c_str(),
                   static_cast<long long>(ctx), windows.size());
      eval::EngineLogitsModel lm(*m.fwd, c.kvs[k], ctx);
      eval::PerplexityOptions opt;
      opt.step = c.step;
      if (k == 0) opt.save_logits = &base; else opt.kl_base = &base;
      ProgressBar bar("  " + c.kvs[k]);
      opt.progress = [&](const eval::PerplexityProgress& p) {
        bar.update(p.tokens_done, p.tokens_total, p.seconds, fmt::format("PPL {:.4f}", p.nll->ppl()));
      };
      const eval::PerplexityResult r = eval::run_perplexity(lm, windows, opt);
      bar.clear();
      eval::ReportRow row;
      row.model = out.model_name;
      row.kv = c.kvs[k];
      row.bits_per_value = eval::cache_report(lm.cache(), lm.seq()).bits_per_value;
      row.ctx = ctx;
      row.threads = num_threads();
      row.windows = int64_t(windows.size());
      row.positions = r.nll.count();
      row.step = c.step;
      row.ppl = r.nll.ppl();
      row.ppl_se = r.nll.ppl_stderr();
      if (r.kl) {
        row.ppl_ratio = std::exp(r.delta_nll->mean());
        row.kl_mean = r.kl->mean;
        row.kl_p99 = r.kl->p99;
        row.kl_p999 = r.kl->p999;
        row.same_top = r.kl->same_top_rate;
      } else {
        row.ppl_ratio = 1.0, row.kl_mean = 0.0, row.kl_p99 = 0.0, row.kl_p999 = 0.0, row.same_top = 1.0;
      }
      std::fprintf(stderr, "  PPL %.4f +/- %.4f, ratio %.4f, KL %.5f, %.3f bits/value, %.1f s\n",
                   *row.ppl, *row.ppl_se, *row.ppl_ratio, *row.kl_mean, row.bits_per_value, r.seconds);
      out.rows.push_back(row);
    }
  }
}

// Speed rows (eval::measure_speed). The prompt is the text's tokens, or without a text a fixed
// sentence, repeated to ctx tokens; bench/llama_cpp_bench.py builds the same prompt for llama.cpp.
void run_speed(const Config& c, LoadedModel& m, const std::vector<int32_t>& ids, Measured& out) {
  for (int64_t ctx : c.speed_ctx) {
    std::vector<int32_t> prompt = ids;
    if (prompt.empty()) prompt = m.tok->encode("The quick brown fox jumps over the lazy dog. ", false, false);
    while (int64_t(prompt.size()) < ctx) prompt.insert(prompt.end(), prompt.begin(), prompt.end());
    for (const auto& kv : c.kvs) {
      std::fprintf(stderr, "report: speed kv %s ctx %lld\n", kv.c_str(), static_cast<long long>(ctx));
      const eval::SpeedResult s = eval::measure_speed(*m.fwd, kv, prompt, ctx, c.decode_tokens);
      eval::ReportRow row;
      row.model = out.model_name;
      row.kv = kv;
      eval::EngineLogitsModel probe(*m.fwd, kv, ctx);
      row.bits_per_value = eval::cache_report(probe.cache(), probe.seq()).bits_per_value;
      row.ctx = ctx;
      row.threads = num_threads();
      row.step = 512;
      row.prefill_tps = s.prefill_tps;
      row.decode_tps = s.decode_tps;
      out.rows.push_back(row);
    }
  }
}

void run_passkey(const Config& c, LoadedModel& m, eval::BosPolicy bos, Measured& out) {
  const eval::TokenizeFn tokenize = [&](const std::string& s) { return m.tok->encode(s, false, false); };
  const bool add_bos = bos == eval::BosPolicy::kOn || (bos == eval::BosPolicy::kAuto && m.tok->add_bos());
  for (const auto& kv : c.kvs)
    for (int64_t len : c.passkey_lens)
      for (double depth : c.depths) {
        std::fprintf(stderr, "report: passkey kv %s len %lld depth %g\n", kv.c_str(),
                     static_cast<long long>(len), depth);
        eval::PasskeyCell cell{kv, len, depth, c.trials, 0};
        for (int t = 0; t < c.trials; ++t) {
          const uint64_t seed = 1000003u + uint64_t(len) * 7919u + uint64_t(depth * 1000) * 31u + uint64_t(t);
          const auto p = eval::make_passkey_prompt(tokenize, len - 8 - (add_bos ? 1 : 0), depth, seed);
          auto pids = tokenize(p.text);
          if (add_bos) pids.insert(pids.begin(), m.tok->bos());
          cell.correct += eval::passkey_answer_correct(
              eval::greedy_continuation(*m.fwd, kv, *m.tok, pids, 8), p.key);
        }
        out.cells.push_back(cell);
      }
}

// Model file names of rows, comma separated (the report's model line when nothing ran here).
std::string models_of(const std::vector<eval::ReportRow>& rows) {
  std::vector<std::string> names;
  for (const auto& r : rows)
    if (!r.model.empty() && std::find(names.begin(), names.end(), r.model) == names.end())
      names.push_back(r.model);
  return names.empty() ? std::string("-") : fmt::format("{}", fmt::join(names, ", "));
}

int run(Config c) {
  if (!c.config.empty()) apply_config_file(c);
  apply_defaults(c);
  if (!c.ctxs.empty() && c.text.empty()) fail("report: perplexity rows need a text (-f or \"text\")");
  const eval::BosPolicy bos = eval::parse_bos_policy(c.bos);
  std::vector<eval::ReportRow> extra;
  for (const auto& e : c.extra) {
    auto r = eval::read_rows(e);  // read first: a bad file fails before the runs
    extra.insert(extra.end(), r.begin(), r.end());
  }
  // Only extra rows (no -c, --speed-ctx, --passkey-lens): render them; no model is needed.
  const bool measure = !c.ctxs.empty() || !c.speed_ctx.empty() || !c.passkey_lens.empty();
  if (!measure && extra.empty())
    fail("report: nothing to do: give -c, --speed-ctx, --passkey-lens or --extra rows");
  // The output directory and the text before any run: a bad one fails now, not after the runs.
  std::error_code ec;
  std::filesystem::create_directories(c.out, ec);
  if (ec) fail("-o {}: cannot create the directory: {}", c.out, ec.message());
  for (const char* f : {"/rows.jsonl", "/report.md"}) check_output_path(c.out + f, "-o");
  const std::string text = c.text.empty() || !measure ? "" : eval::read_text_file(c.text);
  Measured ours;
  if (measure) {
    if (c.model.empty()) c.model = default_model_path();
    LoadedModel m = load_model(c.model, c.threads);
    ours.model_name = std::filesystem::path(c.model).filename().string();
    std::vector<int32_t> ids;
    if (!c.text.empty()) ids = eval::tokenize_for_eval(*m.tok, text, bos);
    ours.text_tokens = ids.size();
    run_quality(c, m, ids, ours);
    run_speed(c, m, ids, ours);
    if (!c.passkey_lens.empty()) run_passkey(c, m, bos, ours);
  }
  std::vector<eval::ReportRow> rows = ours.rows;
  rows.insert(rows.end(), extra.begin(), extra.end());
  std::string jsonl;
  for (const auto& r : rows) jsonl += eval::row_to_json(r) + "\n";
  write_file_atomic(c.out + "/rows.jsonl", jsonl, "-o");
  const auto pngs = eval::write_charts(rows, c.out);
  std::string md = fmt::format(
      "# aquakv report\n\n- command: `{}`\n- date: {}\n- machine: {}\n- model: {}\n- text: {} "
      "({} tokens; {} windows per context at most, step {})\n- threads: {}\n\n",
      command_line(), utc_now(), machine_description(),
      measure ? ours.model_name : models_of(rows), c.text.empty() ? "-" : c.text,
      ours.text_tokens, c.chunks, c.step, measure ? std::to_string(num_threads()) : "-");
  md += "## Quality\n\n" + eval::quality_table(rows) + "\n";
  md += "## Speed\n\n" + eval::speed_table(rows) + "\n";
  if (!ours.cells.empty()) md += "## Passkey retrieval\n\n" + eval::passkey_table(ours.cells) + "\n";
  for (const auto& p : pngs) {
    const std::string name = std::filesystem::path(p).filename().string();
    md += fmt::format("![{}]({})\n\n", name, name);
  }
  write_file_atomic(c.out + "/report.md", md, "-o");
  std::printf("%s", md.c_str());
  std::fprintf(stderr, "report: wrote %s/report.md, rows.jsonl and %zu charts\n", c.out.c_str(), pngs.size());
  return 0;
}

const CommandRegistrar reg{
    "report", "run a matrix of cache formats x contexts; write Markdown tables and PNG charts",
    [](CLI::App& sub) {
      auto c = std::make_shared<Config>();
      sub.add_option("--config", c->config, "JSON config (see tools/aquakv/cmd_report.cpp)");
      sub.add_option("-m,--model", c->model, "GGUF model file");
      sub.add_option("-f,--file", c->text, "text for perplexity / KL");
      sub.add_option("--kv", c->kvs, "cache formats (repeatable; the first is the KL base)");
      sub.add_option("-c,--ctx", c->ctxs, "contexts for perplexity, comma separated")->delimiter(',');
      sub.add_option("--chunks", c->chunks, "windows per context (default 4)");
      sub.add_option("--step", c->step, "tokens per forward call (default 32)");
      sub.add_option("-t,--threads", c->threads, "threads (default all cores)");
      sub.add_option("--speed-ctx", c->speed_ctx, "contexts for the speed rows")->delimiter(',');
      sub.add_option("--decode-tokens", c->decode_tokens, "decode steps timed (default 32)");
      sub.add_option("--passkey-lens", c->passkey_lens, "passkey prompt lengths")->delimiter(',');
      sub.add_option("--depths", c->depths, "passkey depths")->delimiter(',');
      sub.add_option("--trials", c->trials, "passkey prompts per cell (default 2)");
      sub.add_option("--extra", c->extra, "rows (JSON lines) to add, e.g. from bench/llama_cpp_eval.py");
      sub.add_option("--bos", c->bos, "BOS at the start of the text: auto, on, off");
      sub.add_option("-o,--out", c->out, "output directory (default report)");
      return RunFn([c] { return run(*c); });
    }};

}  // namespace
}  // namespace aquakv::cli
