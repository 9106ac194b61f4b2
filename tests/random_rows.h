// Test helper: n normal samples (mean 0, standard deviation sd) from a fixed seed, so that every
// test's inputs are reproducible. One home for what several kernel tests draw their rows from.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace aquakv::testing {

inline std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace aquakv::testing
