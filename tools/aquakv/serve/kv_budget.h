// The KV memory budget of `aquakv serve` (--kv-budget). Owns: the per-format estimate of a
// conversation's live KV bytes at n tokens, bytes(n) = base + per_token * n, measured once at
// startup on a probe sequence of the chosen format (so it holds for any format: fp16, block
// quantized, HIGGS, AQUA-KV with its exact recent window), and the arithmetic of admission.
// Not: which conversation waits or is moved to disk (scheduler.h).
#pragma once

#include <cstdint>
#include <string>

#include "aquakv/engine/forward.h"

namespace aquakv::serve {

struct KvEstimate {
  double base = 0;       // bytes at 0 tokens (extrapolated)
  double per_token = 0;  // bytes per token
  int64_t probe_tokens = 0;
  int64_t probe_bytes = 0;  // live bytes measured at probe_tokens
  // Bytes of a conversation of n tokens, rounded up.
  int64_t bytes(int64_t n) const;
};

// Measures the estimate of `spec` on the model: one sequence filled with `n_probe` tokens
// (a fixed pseudo-random token stream), live_bytes() read at n_probe/2 and n_probe; the line
// through the two points, never below the measured bytes at either. Costs one prefill of
// n_probe tokens.
KvEstimate measure_kv_estimate(Forward& fwd, const std::string& spec, int64_t n_ctx, int64_t n_probe);

}  // namespace aquakv::serve
