// One generation run of the aquakv tool: prefill a prompt into a fresh sequence, then sample and
// stream tokens until -n, an end-of-generation token or a full context. Owns the loop and what it
// measures (timings, the cache's memory and bits per value at the end). Not: prompt building or
// printing the summary (cmd_generate.cpp, generate_compare.cpp).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/sampler.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv::cli {

struct GenerationResult {
  int seq = -1;                 // the cache's sequence
  std::vector<int32_t> tokens;  // sampled tokens in order, an end-of-generation token included
  std::vector<float> logits;    // after the last token the cache holds
  int64_t n_prompt = 0;
  double t_prefill = 0;  // seconds of the prompt's forward pass
  double t_decode = 0;   // seconds from the first sample to the end (forward passes + sampling)
  int64_t live_bytes = 0, fixed_bytes = 0;  // the cache's, at the end
  int64_t cache_tokens = 0;
  double bits_per_value = 0;  // sum of the cache's bits_report terms at the end
  double prefill_tps() const { return t_prefill > 0 ? double(n_prompt) / t_prefill : 0.0; }
  double decode_tps() const { return t_decode > 0 ? double(tokens.size()) / t_decode : 0.0; }
};

// Where the prompt starts: a new sequence, or one already holding a prefix of the prompt
// (a restored prompt cache): `seq` holds prompt[0, n_cached); when it holds all of it,
// `logits` are the logits after its last token (otherwise they are computed).
struct PromptStart {
  int seq = -1;            // -1: a new sequence of the cache
  int64_t n_cached = 0;
  std::vector<float> logits;
  // Called once after the prompt is processed (e.g. to save a prompt cache), with the
  // sequence and the logits after the prompt's last token.
  std::function<void(int seq, std::span<const float> logits)> after_prompt;
};

// Runs on a sequence of `cache` (see PromptStart); the generated text goes to `out` as it comes
// (whole UTF-8 characters only). `n_ctx` is the cache's context (generation stops, with a note
// on stderr, when it is full). n_prompt and t_prefill count only the tokens processed here.
GenerationResult generate_tokens(Forward& fwd, const Tokenizer& tok, KvCache& cache, std::span<const int32_t> prompt,
                                 Sampler& sampler, int64_t n_predict, int64_t n_ctx, std::FILE* out,
                                 PromptStart start = {});

}  // namespace aquakv::cli
