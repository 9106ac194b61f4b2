// A small persistent thread pool and parallel_for. Owns: the worker threads that kernels use
// (set once from -t). Not: BLAS threading (OpenBLAS keeps its own pool; see set_num_threads).
#pragma once

#include <cstdint>
#include <functional>

namespace aquakv {

// Sets the number of threads used by parallel_for and by OpenBLAS. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per thread, and waits.
// Ranges are split on multiples of `grain` (except the last). Runs inline when n is small or
// when called from inside a worker. fn must not throw.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace aquakv
