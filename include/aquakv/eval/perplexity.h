// The perplexity / KL evaluation loop. Owns: cutting the token stream into windows, feeding
// each window to a fresh sequence `step` tokens at a time, scoring every predicted position,
// and collecting NLL and KL statistics. Not: the model or the cache (the caller adapts them to
// LogitsModel), tokenization, printing (the CLI does those).
//
// Protocol (AQUA-KV paper; issue 4): the text is tokenized once, BOS (if any) only at the very
// start; windows are the non-overlapping slices [w*ctx, (w+1)*ctx) of the stream, the incomplete
// tail dropped; each window starts a fresh cache; positions 0..ctx-2 of a window predict tokens
// 1..ctx-1, so a window scores ctx-1 positions (llama.cpp's own tool scores only the second
// half; bench/llama_cpp_eval.py scores the same positions as we do).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "aquakv/eval/logits_file.h"
#include "aquakv/eval/stats.h"

namespace aquakv::eval {

// A model with a cache, as the evaluation loop sees it.
class LogitsModel {
 public:
  virtual ~LogitsModel() = default;
  virtual int64_t n_vocab() const = 0;
  // Starts a new sequence with an empty cache.
  virtual void reset() = 0;
  // Feeds n tokens that continue the sequence; writes n rows of n_vocab logits (row i predicts
  // the token after tokens[i]).
  virtual void forward(const int32_t* tokens, int64_t n, float* logits) = 0;
};

// Non-overlapping windows of ctx tokens (at most max_windows of them when > 0).
std::vector<std::vector<int32_t>> make_windows(const std::vector<int32_t>& tokens, int64_t ctx,
                                               int64_t max_windows);

struct PerplexityProgress {
  int64_t window = 0, n_windows = 0;
  int64_t tokens_done = 0, tokens_total = 0;  // over all windows
  double seconds = 0;                         // since the start
  bool window_done = false;                   // true once per window, after its last step
  const NllStats* nll = nullptr;              // running statistics
};

struct PerplexityOptions {
  int64_t step = 32;                    // tokens per forward call; 0 = whole window at once
  LogitsFile* save_logits = nullptr;    // when set, every scored row is added to it
  const LogitsFile* kl_base = nullptr;  // when set, KL against its rows (already checked)
  std::function<void(const PerplexityProgress&)> progress;
};

struct PerplexityResult {
  NllStats nll;
  std::vector<double> window_ppl;  // PPL of each window alone
  std::optional<KlSummary> kl;     // with kl_base
  std::optional<NllStats> base_nll;  // the base run's NLL over the same positions
  // Paired differences nll_test - nll_base: exp(mean) is PPL / PPL_base exactly, and
  // exp(mean) * mean_stderr() its standard error (delta method, pairing removes the shared
  // per-token difficulty from the variance).
  std::optional<NllStats> delta_nll;
  int64_t n_windows = 0;
  int64_t tokens_fed = 0;
  double seconds = 0;
};

PerplexityResult run_perplexity(LogitsModel& model,
                                const std::vector<std::vector<int32_t>>& windows,
                                const PerplexityOptions& opt);

}  // namespace aquakv::eval
