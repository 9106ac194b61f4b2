// A small persistent thread pool and parallel_for. Owns: the worker threads that kernels use
// (set once from -t) and their wait statistics. Not: BLAS threading (OpenBLAS keeps its own pool;
// see set_num_threads). Workers wait for work by spinning for a short while, then sleep on a
// futex (src/util/parallel.cpp says why); AQUAKV_SPIN_US sets the spin time (default 200).
// When other processes keep the cores busy (the caller gets < 80% of a CPU), regions run on the
// caller alone until it gets > 92% again, so -t N is not slower than -t 1 on a shared machine;
// AQUAKV_ADAPT=0 turns that off.
#pragma once

#include <cstdint>
#include <functional>

namespace aquakv {

// Sets the number of threads used by parallel_for and by OpenBLAS. n <= 0 means all cores.
void set_num_threads(int n);
int num_threads();

// Cumulative counters of the parallel regions run so far (all threads of the caller's side).
struct PoolStats {
  uint64_t regions = 0;  // parallel_for calls that went to the pool (not run inline)
  uint64_t wait_ns = 0;  // time the calling thread waited for workers after its own slice
  uint64_t sleeps = 0;   // regions whose caller gave up spinning and slept on the futex
  uint64_t sleep_ns = 0;  // the caller's time asleep in those regions (part of wait_ns)
  uint64_t inline_regions = 0;  // regions run on the caller alone: cores busy with other work
};
PoolStats pool_stats();

// Turns the step-aside on busy cores on or off (default: on unless AQUAKV_ADAPT=0). Tests turn
// it off so that regions reach the workers whatever the machine's load.
void set_parallel_adaptive(bool on);

// Runs fn(begin, end) over [0, n) split into contiguous ranges, one per thread, and waits.
// Ranges are split on multiples of `grain` (except the last). Runs inline when n is small or
// when called from inside a worker. fn must not throw.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

}  // namespace aquakv
