// Sampler: picks the next token from a row of logits. Owns: greedy choice and the llama.cpp
// style chain top-k -> top-p -> min-p -> temperature -> draw from a seeded generator. Not:
// logits (engine/forward.h) or text (engine/tokenizer.h).
//
// The chain, on logits l_i:
//   top-k:  keep the k largest (k <= 0: all);
//   top-p:  p_i = softmax(l)_i over the kept ones; keep the smallest prefix (by descending p)
//           whose mass reaches top_p (top_p >= 1: all);
//   min-p:  keep p_i >= min_p * max p (min_p <= 0: all);
//   temperature: q_i = softmax(l_i / T) over the kept ones, then draw i with probability q_i.
// temperature <= 0 is greedy (argmax, lowest id on ties). The draw uses a 64-bit Mersenne
// twister and u = (r >> 11) * 2^-53, so a seed gives the same tokens on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace aquakv {

struct SamplerParams {
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);  // throws Error for negative temperature/top_p/min_p

  int32_t sample(std::span<const float> logits);

  // The candidates the chain keeps and their final probabilities q_i (descending); for greedy
  // the argmax with probability 1.
  std::vector<std::pair<int32_t, double>> distribution(std::span<const float> logits) const;

  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
};

}  // namespace aquakv
