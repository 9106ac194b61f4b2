// The base-logits file of KL evaluations: `aquakv perplexity --save-logits FILE` on a 16-bit
// cache run writes it, `--kl-base FILE` on another run reads it. Owns: the on-disk format, its
// validation on load, and the check that a run evaluates the same model, text and windows.
// Not: the KL math (eval/stats.h).
//
// What is stored, and why. A full row is n_vocab log-probs (49152 for the default model: 96 KiB
// per position in 16 bit, 2 GB for 10 windows of 2048 tokens); the KL needs less. Each scored
// position keeps its base distribution reduced to the most probable tokens, in decreasing
// order, until the remaining mass p_rest <= kMassEps or k_max tokens are kept (default
// kMaxTop = 1024, `--logits-top`), as (u32 token id, f32 log p) pairs, plus p_rest and the base
// NLL of the true next token. The KL computed from that is the KL of the distributions coarsened
// to {kept tokens, rest}: a lower bound whose gap is exactly p_rest * KL(P_tail || Q_tail)
// (chain rule, see stats.h). Small models have long tails: for the default model on wikitext
// (llama.cpp f16, 511 positions, mean entropy 2.9 nats) the mean tail mass is 10.9% at k = 128,
// 5.0% at 512, 3.0% at 1024, 0.7% at 4096. If the within-tail KL is of the order of the whole
// KL, the default underestimates the mean KL by about 3%; every run prints the mean tail mass
// so this is visible, and `--logits-top 49152` makes the KL exact for this vocabulary. Log-probs
// stay f32: f16 would move each by up to 2^-11 |log p|, a first-order KL error of the order of
// H(P) * 2^-12 ~ 1e-3 nats, as large as the KL of an 8-bit cache. Size: <= 10 + 8 k bytes per
// position (8 KiB at the default).
//
// Layout (little-endian; sizes 64-bit):
//   "AQKVLGTS" | u32 version (1) | u32 k_max | f64 mass_eps
//   u64 n_vocab | u64 ctx | u64 rows_per_window | u64 n_windows | u64 model_fingerprint
//   str model | str kv_spec | str text            (str = u32 length + bytes, informational)
//   u64 window_hash[n_windows]                     (hash_tokens of each window's ids)
//   rows, n_windows * rows_per_window of: f32 base_nll | f32 p_rest | u16 n_top |
//                                          n_top x (u32 id | f32 log p)
//   u64 checksum                                   (fnv1a64 of every byte before it)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aquakv/eval/stats.h"
#include "aquakv/util/hash.h"

namespace aquakv::eval {

inline constexpr int kMaxTop = 1024;
inline constexpr double kMassEps = 1e-4;

// FNV-1a 64 (util/hash.h) of the ids as little-endian int32.
uint64_t hash_tokens(const int32_t* ids, int64_t n);

// What identifies an evaluation run, for the compatibility check.
struct LogitsRunInfo {
  std::string model;               // for messages (e.g. the model file name)
  uint64_t model_fingerprint = 0;  // identity of the model file (the caller computes it)
  int64_t n_vocab = 0;
  int64_t ctx = 0;
  int64_t rows_per_window = 0;     // scored positions per window (ctx - 1)
  std::vector<uint64_t> window_hashes;
  std::string kv_spec;             // informational: the base run's cache
  std::string text;                // informational: the text file
};

class LogitsFile {
 public:
  LogitsFile() = default;
  explicit LogitsFile(LogitsRunInfo info, int k_max = kMaxTop, double mass_eps = kMassEps);

  // Reads and validates a file; throws Error naming the file and the bad field. Besides the
  // structure and checksum, every number must be sane: log-probabilities finite and <= 0,
  // base NLL finite and >= 0, rest mass in [0, 1].
  static LogitsFile load(const std::string& path);
  // The same validation on bytes in memory (`name` for messages; the fuzz target).
  static LogitsFile parse(std::string_view bytes, const std::string& name);
  // Writes atomically (util/file_io.h).
  void save(const std::string& path) const;

  // Appends the compact form of one scored position (in window order).
  void add_row(const float* logits, int64_t target);
  void add_row(CompactRow row);

  // Throws Error unless `run` evaluates the same model, vocabulary, context and windows (a run
  // may use fewer windows than the file, i.e. a smaller --chunks; the first ones must match).
  void check_compatible(const LogitsRunInfo& run, const std::string& path) const;

  const LogitsRunInfo& info() const { return info_; }
  int k_max() const { return k_max_; }
  double mass_eps() const { return mass_eps_; }
  int64_t n_rows() const { return int64_t(rows_.size()); }
  const CompactRow& row(int64_t i) const { return rows_[size_t(i)]; }
  // Base perplexity over the first n rows (for the PPL ratio on the same positions).
  NllStats base_nll(int64_t n_rows) const;

 private:
  LogitsRunInfo info_;
  int k_max_ = kMaxTop;
  double mass_eps_ = kMassEps;
  std::vector<CompactRow> rows_;
};

}  // namespace aquakv::eval
