// The engine as the evaluation commands use it. Owns: binding a Model's Forward and a --kv cache
// spec to the LogitsModel seam (a fresh cache per window), tokenizing evaluation texts with the
// BOS policy, the model fingerprint of logits files, prefill/decode timing, greedy continuation
// (passkey) and the cache's bits and memory report. Not: the forward pass (engine/), cache
// formats (kv/), the statistics (eval/stats.h).
//
// BOS policy. `auto` (default) puts BOS at the start of the text exactly when the vocabulary's
// add_bos_token says so, which is what llama.cpp's perplexity tool does (it tokenizes with
// add_special = true and writes BOS into the first position of each window only when
// add_bos_token is set). The default model (SmolLM2) has add_bos_token = false, so both tools
// see no BOS and the same token ids. Unlike llama.cpp (which overwrites the first token of every
// window with BOS), BOS is only ever at the very start of the stream (AQUA-KV protocol).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/eval/perplexity.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv::eval {

enum class BosPolicy { kAuto, kOn, kOff };
BosPolicy parse_bos_policy(const std::string& s);  // "auto" | "on" | "off", else Error

// Token ids of an evaluation text (special-token texts are not parsed) with BOS per `bos`.
std::vector<int32_t> tokenize_for_eval(const Tokenizer& tok, const std::string& text,
                                       BosPolicy bos);

// Identity of a model file for logits files: FNV-1a 64 of its size and first 4 MiB (the GGUF
// header, metadata and tensor table, plus the first weights).
uint64_t model_fingerprint(const std::string& path);

// Reads a whole text file (util/file_io.h: a regular file or a stream, capped) and checks that
// it is UTF-8; Error names `flag` and the file.
std::string read_text_file(const std::string& path, const std::string& flag = "-f");

class EngineLogitsModel : public LogitsModel {
 public:
  // `ctx` is the cache's max_tokens per sequence.
  EngineLogitsModel(Forward& fwd, std::string kv_spec, int64_t ctx);
  int64_t n_vocab() const override;
  void reset() override;  // a new cache from the spec, with one sequence
  void forward(const int32_t* tokens, int64_t n, float* logits) override;
  KvCache& cache() { return *cache_; }
  int seq() const { return seq_; }

 private:
  Forward& fwd_;
  std::string spec_;
  KvShape shape_;
  std::unique_ptr<KvCache> cache_;
  int seq_ = 0;
};

// Bits per value term by term, total, and measured bytes of a cache's sequence.
struct CacheReport {
  std::string name;
  std::vector<KvBitsTerm> terms;
  double bits_per_value = 0;  // sum of the terms
  int64_t tokens = 0;
  int64_t live_bytes = 0;     // storage held for tokens now (all sequences)
  int64_t fixed_bytes = 0;    // per-model bytes independent of tokens (e.g. predictors)
  int64_t n_layers = 0, width = 0;
  // Formats that attend to a subset of their rows (ClusterKV): rows attended / rows the masks
  // allowed, over every query since the cache was made; -1 for the others.
  double attended_share = -1;
  // Measured live bits per value: 8 * live_bytes / (tokens * n_layers * 2 * width).
  double measured_bits_per_value() const;
};
CacheReport cache_report(const KvCache& cache, int seq);
std::string format_cache_report(const CacheReport& r);  // multi-line, for the terminal

struct SpeedResult {
  double prefill_tps = 0;  // prompt tokens per second, fed `batch` at a time
  double decode_tps = 0;   // single-token steps per second after ctx - n_decode tokens
};
// Times a ctx-token prefill (fresh cache) and n_decode single-token steps that end at ctx.
// `tokens` must hold at least ctx ids.
SpeedResult measure_speed(Forward& fwd, const std::string& kv_spec,
                          const std::vector<int32_t>& tokens, int64_t ctx, int64_t n_decode,
                          int64_t batch = 512);

// Feeds `prompt` to a fresh cache and greedily generates up to n_tokens (stopping at end of
// generation); returns the generated text.
std::string greedy_continuation(Forward& fwd, const std::string& kv_spec, const Tokenizer& tok,
                                const std::vector<int32_t>& prompt, int n_tokens,
                                int64_t step = 512);

}  // namespace aquakv::eval
