// The prompt cache of `aquakv generate` (llama.cpp's --prompt-cache): a session file
// (kv/session_file.h) holding a processed prompt. Owns: restoring the longest prefix of a new
// prompt that the file holds (in the file's format, or moved into the in-memory format), and
// saving the sequence in the stored format. Not: the file format or the formats' states (kv/).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/kv/session_file.h"

namespace aquakv::cli {

struct PromptCacheRestore {
  int64_t n_reused = 0;        // prompt tokens the sequence holds after the restore
  std::vector<float> logits;   // after the whole prompt, when the file held exactly it
  double seconds = 0;          // open + check + load (+ move between formats) + truncate
  uint64_t file_bytes = 0;
  int64_t file_tokens = 0;
  std::string file_format;     // the file's --kv spelling
  bool moved = false;          // restored through another format (copy_sequence)
};

// Restores into sequence `seq` (empty) of `cache` the longest prefix of `prompt` that `path`
// holds. A missing file restores nothing. A file for another model, a corrupted file or one
// whose format cannot be rebuilt is refused (Error). At least the last prompt token is left to
// process unless the file holds exactly the prompt with its logits.
PromptCacheRestore restore_prompt_cache(const std::string& path, KvCache& cache, int seq,
                                        std::span<const int32_t> prompt);

struct PromptCacheSave {
  SessionSaveStats stats;
  double seconds = 0;  // moving into the stored format + writing
  int64_t tokens = 0;
};

// Saves sequence `seq` of `cache` with its tokens and logits to `path`, stored as `file_spec`
// (a --kv spelling; empty or equal to the cache's own: stored as it is held).
PromptCacheSave save_prompt_cache(const std::string& path, KvCache& cache, int seq,
                                  std::span<const int32_t> tokens, std::span<const float> logits,
                                  const std::string& file_spec, const SessionSaveOptions& opt);

}  // namespace aquakv::cli
