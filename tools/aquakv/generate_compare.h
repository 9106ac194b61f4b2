// `aquakv generate --compare [KV]`: the same prompt through two KV caches with the same sampling
// settings (greedy, or the same seed), both outputs printed, then a side-by-side table: bits per
// value, live KV bytes, prefill and decode tokens/s, tokens generated and how many leading
// generated tokens agree with the reference cache's. Owns the two runs and the table.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/sampler.h"
#include "aquakv/engine/tokenizer.h"

namespace aquakv::cli {

struct CompareCache {
  std::string label;  // as the user spelled it (--compare fp16, --kv aquakv)
  std::string spec;   // what make_cache gets (aquakv resolved to its cached adapter file)
};

// `echo` is printed before each output (the prompt in plain mode, "" in chat mode). Returns 0.
int compare_generation(Forward& fwd, const Tokenizer& tok, std::span<const int32_t> prompt, const std::string& echo,
                       const SamplerParams& sp, int64_t n_predict, int64_t n_ctx, const CompareCache& ref,
                       const CompareCache& test);

}  // namespace aquakv::cli
