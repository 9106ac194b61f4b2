// `aquakv passkey`: long-context retrieval. Hides a seeded random key at several depths of
// filler text of several lengths, greedily decodes the model's answer with each cache format,
// and reports accuracy per (format, length, depth) cell as a table and JSON.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "aquakv/eval/engine_runner.h"
#include "aquakv/eval/passkey.h"
#include "aquakv/eval/report.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "eval_cli.h"

namespace aquakv::cli {
namespace {

struct Args {
  std::string model, json, bos = "auto";
  CLI::Option* json_opt = nullptr;
  std::vector<std::string> kvs{"fp16"};
  std::vector<int64_t> lens;
  std::vector<double> depths{0.0, 0.25, 0.5, 0.75, 1.0};
  int trials = 3, n_gen = 8, threads = 0;
  uint64_t seed = 1;
  int64_t step = 512;
};

int run(Args a) {
  if (a.trials < 1) fail("--trials {}: must be >= 1", a.trials);
  if (a.n_gen < 1) fail("-n {}: must be >= 1", a.n_gen);
  if (a.step < 1) fail("--step {}: must be >= 1 (prompt tokens per forward call)", a.step);
  if (a.json_opt->count() > 0) check_output_path(a.json, "--json");
  const eval::BosPolicy bos = eval::parse_bos_policy(a.bos);
  LoadedModel m = load_model(a.model, a.threads);
  const int64_t limit = m.model->config().n_ctx_train;
  if (a.lens.empty()) {
    for (int64_t l = 1024; l <= std::max<int64_t>(limit, 1024); l *= 2) a.lens.push_back(l);
  }
  for (int64_t l : a.lens)
    if (limit > 0 && l > limit)
      fail("-c {}: longer than the model's context {} (passkey lengths must fit it)", l, limit);
  const bool add_bos = bos == eval::BosPolicy::kOn || (bos == eval::BosPolicy::kAuto && m.tok->add_bos());
  const eval::TokenizeFn tokenize = [&](const std::string& s) {
    return m.tok->encode(s, /*add_special=*/false, /*parse_special=*/false);
  };
  std::printf("passkey: %zu formats x %zu lengths x %zu depths x %d trials, %d generated tokens, "
              "%d threads\n", a.kvs.size(), a.lens.size(), a.depths.size(), a.trials, a.n_gen,
              num_threads());
  std::vector<eval::PasskeyCell> cells;
  nlohmann::json jt = nlohmann::json::array();
  ProgressBar bar("passkey");
  int64_t done = 0, total = 0;
  for (int64_t l : a.lens) total += l * int64_t(a.depths.size()) * a.trials * int64_t(a.kvs.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& kv : a.kvs) {
    for (int64_t len : a.lens) {
      for (double depth : a.depths) {
        eval::PasskeyCell cell{kv, len, depth, a.trials, 0};
        for (int t = 0; t < a.trials; ++t) {
          // The same prompts for every cache format: the seed depends on length, depth, trial.
          const uint64_t seed = a.seed * 1000003u + uint64_t(len) * 7919u +
                                uint64_t(depth * 1000) * 31u + uint64_t(t);
          const eval::PasskeyPrompt p = eval::make_passkey_prompt(
              tokenize, len - a.n_gen - (add_bos ? 1 : 0), depth, seed);
          std::vector<int32_t> ids = tokenize(p.text);
          if (add_bos) ids.insert(ids.begin(), m.tok->bos());
          const std::string answer = eval::greedy_continuation(*m.fwd, kv, *m.tok, ids, a.n_gen, a.step);
          const bool ok = eval::passkey_answer_correct(answer, p.key);
          cell.correct += ok;
          jt.push_back({{"kv", kv}, {"len", len}, {"depth", depth}, {"trial", t},
                        {"prompt_tokens", ids.size()}, {"needle_token", p.needle_token + (add_bos ? 1 : 0)},
                        {"actual_depth", p.depth()}, {"key", p.key}, {"answer", answer}, {"correct", ok}});
          done += len;
          bar.update(done, total, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                     fmt::format("{} len {} depth {:g}", kv, len, depth));
        }
        cells.push_back(cell);
      }
    }
  }
  bar.clear();
  std::printf("\n%s", eval::passkey_table(cells).c_str());
  if (a.json_opt->count() > 0) {
    nlohmann::json j;
    j["command"] = command_line();
    j["date"] = utc_now();
    j["model"] = a.model;
    j["threads"] = num_threads();
    j["n_gen"] = a.n_gen;
    nlohmann::json jc = nlohmann::json::array();
    for (const auto& c : cells)
      jc.push_back({{"kv", c.kv}, {"len", c.len}, {"depth", c.depth}, {"trials", c.trials}, {"correct", c.correct}});
    j["cells"] = jc;
    j["trials"] = jt;
    write_file_atomic(a.json, j.dump(2) + "\n", "--json");
  }
  return 0;
}

const CommandRegistrar reg{
    "passkey", "long-context retrieval: accuracy of finding a hidden key per length and depth",
    [](CLI::App& sub) {
      auto a = std::make_shared<Args>();
      a->model = default_model_path();
      sub.add_option("-m,--model", a->model, "GGUF model file")->capture_default_str();
      sub.add_option("--kv", a->kvs, "KV cache format(s), repeatable")->capture_default_str();
      sub.add_option("-c,--ctx", a->lens,
                     "prompt lengths in tokens, comma separated (default 1024, 2048, ... up to "
                     "the model's context)")->delimiter(',')->check(CLI::Range(int64_t(64), int64_t(1) << 24));
      sub.add_option("--depths", a->depths, "key depths in [0,1], comma separated")
          ->delimiter(',')->capture_default_str()->check(CLI::Range(0.0, 1.0));
      sub.add_option("--trials", a->trials, "prompts per cell")->capture_default_str();
      sub.add_option("-n", a->n_gen, "tokens to generate for the answer")->capture_default_str();
      sub.add_option("--seed", a->seed, "seed of the keys")->capture_default_str();
      sub.add_option("--step", a->step, "prompt tokens per forward call")->capture_default_str();
      sub.add_option("-t,--threads", a->threads, "threads (0 = all cores)")
          ->capture_default_str()->check(CLI::NonNegativeNumber);
      sub.add_option("--bos", a->bos, "BOS before the prompt: auto, on, off")->capture_default_str();
      a->json_opt = sub.add_option("--json", a->json, "write cells and every trial as JSON to this file");
      return RunFn([a] { return run(*a); });
    }};

}  // namespace
}  // namespace aquakv::cli
