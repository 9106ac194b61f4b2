// Prompt caches (prompt_cache.h).
#include "prompt_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/util/error.h"

namespace aquakv::cli {
namespace {

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PromptCacheRestore restore_prompt_cache(const std::string& path, KvCache& cache, int seq,
                                        std::span<const int32_t> prompt) {
  PromptCacheRestore r;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return r;
  const auto t0 = std::chrono::steady_clock::now();
  const auto file = SessionFile::open(path);
  const SessionInfo& in = file->info();
  file->check_model(cache.shape());
  r.file_bytes = file->file_bytes();
  r.file_tokens = int64_t(in.tokens.size());
  r.file_format = in.kv_spec;
  const size_t n = std::min(in.tokens.size(), prompt.size());
  const int64_t match = std::mismatch(in.tokens.begin(), in.tokens.begin() + std::ptrdiff_t(n), prompt.begin()).first -
                        in.tokens.begin();
  if (match == 0) return r;
  if (in.state_format == cache.state_format()) {
    file->load_into(cache, seq);
  } else {
    // Stored in another format: rebuild a cache of that format, then move the rows over.
    auto src = make_cache(in.kv_spec, cache.shape());
    const int s = src->add_sequence();
    file->load_into(*src, s);
    copy_sequence(*src, s, cache, seq);
    r.moved = true;
  }
  const bool whole = match == int64_t(prompt.size()) && match == r.file_tokens &&
                     int64_t(in.logits.size()) > 0;
  if (whole) {
    r.n_reused = match;
    r.logits = in.logits;
  } else {
    r.n_reused = cache.truncate(seq, std::min<int64_t>(match, int64_t(prompt.size()) - 1));
  }
  r.seconds = since(t0);
  return r;
}

PromptCacheSave save_prompt_cache(const std::string& path, KvCache& cache, int seq,
                                  std::span<const int32_t> tokens, std::span<const float> logits,
                                  const std::string& file_spec, const SessionSaveOptions& opt) {
  PromptCacheSave s;
  const auto t0 = std::chrono::steady_clock::now();
  s.tokens = int64_t(tokens.size());
  std::unique_ptr<KvCache> dst;
  if (!file_spec.empty()) dst = make_cache(file_spec, cache.shape());
  if (!dst || dst->state_format() == cache.state_format()) {
    s.stats = save_session(path, cache, seq, tokens, logits, opt);
  } else {
    const int d = dst->add_sequence();
    copy_sequence(cache, seq, *dst, d);
    s.stats = save_session(path, *dst, d, tokens, logits, opt);
  }
  s.seconds = since(t0);
  return s;
}

}  // namespace aquakv::cli
