// The thread pool behind parallel_for (util/parallel.h).
//
// Why spinning: a decode step of a small model runs a few hundred parallel regions of tens of
// microseconds each. Waking a worker through a mutex + condition variable costs a futex syscall
// and a scheduler wake-up per region (tens of microseconds in a virtual machine), which made two
// threads slower than one. Here a region is published by bumping an atomic generation counter;
// workers that finished the previous region recently are still spinning on it (with pause) and
// start within a cache-line transfer. A worker that has spun for spin_ns() without work goes to
// sleep on the counter's futex, so an idle pool costs no CPU; the caller issues a futex wake
// only when it knows someone sleeps. The caller waits for the workers the same way (spin, then
// futex on the pending count).
#include "aquakv/util/parallel.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AQUAKV_PAUSE() _mm_pause()
#else
#define AQUAKV_PAUSE() std::this_thread::yield()
#endif

extern "C" void openblas_set_num_threads(int);

namespace aquakv {
namespace {

using Clock = std::chrono::steady_clock;

// Futex on a 32-bit atomic (std::atomic<uint32_t> has the layout of its value on Linux).
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// How long a waiter spins before sleeping. Long enough to bridge the serial gaps between the
// regions of one decode step (norms, argmax, sampling: microseconds), short enough that a pool
// idle between requests sleeps almost at once. AQUAKV_SPIN_US overrides it (0 = never spin).
int64_t spin_ns() {
  static const int64_t ns = [] {
    const char* env = std::getenv("AQUAKV_SPIN_US");
    if (env != nullptr && *env != '\0') return int64_t(std::max(0L, std::atol(env))) * 1000;
    return int64_t(200'000);
  }();
  return ns;
}

// Spins until pred() holds or spin_ns() passed (the clock is read every 64 pauses). Returns
// pred()'s last value.
template <typename Pred>
bool spin_until(Pred pred) {
  const int64_t budget = spin_ns();
  if (budget == 0) return pred();
  const auto t0 = Clock::now();
  for (int i = 1;; ++i) {
    if (pred()) return true;
    AQUAKV_PAUSE();
    if ((i & 63) == 0 && Clock::now() - t0 > std::chrono::nanoseconds(budget)) return pred();
  }
}

// A region is cut into at most kChunksPerThread * threads chunks (contiguous ranges on
// multiples of grain) that the caller and the workers claim one at a time from an atomic word.
// Claiming instead of fixed slices matters on a shared machine: a worker that the scheduler has
// not run yet simply claims nothing, and the caller does its chunks instead of waiting for it;
// the caller only waits for chunks already in a worker's hands.
constexpr int64_t kChunksPerThread = 4;

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    quit_.store(false);
    for (int i = 1; i < n; ++i) {
      workers_.emplace_back([this, g = gen_.load()] { loop(g); });
    }
  }

  void run(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
    const int64_t blocks = (n + grain - 1) / grain;
    const int64_t chunks = std::min<int64_t>(blocks, kChunksPerThread * size());
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    blocks_ = blocks;
    chunks_ = chunks;
    done_.store(0, std::memory_order_relaxed);
    const uint32_t g = gen_.load(std::memory_order_relaxed) + 1;
    // The claim word holds (generation << 32 | chunks left); its release store publishes the job.
    claim_.store(uint64_t(g) << 32 | uint64_t(chunks), std::memory_order_release);
    // seq_cst pairs with the sleepers' increment-then-recheck (Dekker): either this load sees a
    // sleeper (and wakes it) or the sleeper's recheck sees the new generation.
    gen_.store(g, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(gen_);
    work(g);
    const auto t0 = Clock::now();
    const uint32_t total = uint32_t(chunks);
    auto finished = [&] { return done_.load(std::memory_order_acquire) == total; };
    if (!spin_until(finished)) {
      ++stats_.sleeps;
      const auto s0 = Clock::now();
      for (;;) {
        main_sleeping_.store(1, std::memory_order_seq_cst);
        const uint32_t d = done_.load(std::memory_order_seq_cst);
        if (d == total) break;
        futex_wait(done_, d);
      }
      main_sleeping_.store(0, std::memory_order_relaxed);
      stats_.sleep_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s0).count());
    }
    stats_.wait_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    ++stats_.regions;
    fn_ = nullptr;
  }

  PoolStats stats() const { return stats_; }

  static thread_local bool in_worker;

 private:
  // Claims and runs chunks of generation g until none is left. A successful claim guarantees
  // the job fields are g's: the caller does not touch them before every chunk is done.
  void work(uint32_t g) {
    uint64_t w = claim_.load(std::memory_order_acquire);
    for (;;) {
      if (uint32_t(w >> 32) != g || uint32_t(w) == 0) return;
      if (!claim_.compare_exchange_weak(w, w - 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;
      }
      const int64_t c = chunks_ - int64_t(uint32_t(w));  // chunks are claimed in order 0, 1, ...
      const int64_t b0 = blocks_ * c / chunks_, b1 = blocks_ * (c + 1) / chunks_;
      const int64_t lo = std::min(n_, b0 * grain_), hi = std::min(n_, b1 * grain_);
      if (lo < hi) (*fn_)(lo, hi);
      const uint32_t total = uint32_t(chunks_);
      if (done_.fetch_add(1, std::memory_order_seq_cst) + 1 == total &&
          main_sleeping_.load(std::memory_order_seq_cst) != 0) {
        futex_wake_all(done_);
      }
      w = claim_.load(std::memory_order_acquire);
    }
  }

  // Waits until the generation differs from `seen`: spin, then sleep on the futex.
  uint32_t next_generation(uint32_t seen) {
    auto changed = [&] { return gen_.load(std::memory_order_acquire) != seen; };
    if (spin_until(changed)) return gen_.load(std::memory_order_acquire);
    for (;;) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      if (gen_.load(std::memory_order_seq_cst) == seen) futex_wait(gen_, seen);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      const uint32_t g = gen_.load(std::memory_order_acquire);
      if (g != seen) return g;
    }
  }

  void loop(uint32_t seen) {
    in_worker = true;
    for (;;) {
      seen = next_generation(seen);
      if (quit_.load(std::memory_order_acquire)) return;
      work(seen);
    }
  }

  void stop() {
    quit_.store(true);
    gen_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(gen_);
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  // The job of the current generation: written by the caller before publishing it through
  // claim_ and read by whoever claims one of its chunks.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, blocks_ = 0, chunks_ = 0;
  alignas(64) std::atomic<uint64_t> claim_{0};
  alignas(64) std::atomic<uint32_t> gen_{0};  // futex word workers sleep on
  std::atomic<int> sleepers_{0};
  std::atomic<bool> quit_{false};
  alignas(64) std::atomic<uint32_t> done_{0};  // chunks finished; futex word the caller sleeps on
  std::atomic<int> main_sleeping_{0};
  alignas(64) PoolStats stats_;
};

thread_local bool Pool::in_worker = false;

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

std::mutex g_run_mu;

// Whether the cores are shared with other busy processes, judged from the caller's own share
// of the CPU: over windows of >= 20 ms of wall time, the thread CPU time the calling thread got
// (plus the time it slept waiting for its own workers) divided by the wall time. On a machine
// with idle cores that share is ~1 (spinning counts as running). When other processes keep the cores busy it falls, and a second thread of ours
// costs more than it brings: every spinning or working worker takes a time slice the caller
// would otherwise get, and a worker descheduled in the middle of a chunk makes the caller wait
// for a whole scheduler slice. Below kLow the pool steps aside (regions run inline on the
// caller, as with one thread, and the workers fall asleep); above kHigh it comes back. The
// window is measured in both modes, so the pool returns as soon as the machine is free.
// AQUAKV_ADAPT=0 turns this off (always parallel). Called with g_run_mu held.
class Contention {
 public:
  void set_enabled(bool on) {
    enabled_ = on;
    shared_ = false;
    cpu0_ = -1;
  }
  // slept_ns: the caller's total time asleep waiting for its own workers, counted as running
  // (waiting for a long chunk of our own is not contention).
  bool shared(uint64_t slept_ns) {
    if (!enabled_) return false;
    const auto now = Clock::now();
    if (now - wall0_ < std::chrono::milliseconds(20)) return shared_;
    const int64_t cpu = thread_cpu_ns() + int64_t(slept_ns);
    const double wall = double(std::chrono::duration_cast<std::chrono::nanoseconds>(now - wall0_).count());
    // A window much longer than the decisions it serves spans idle time (the caller blocked on
    // input between requests), not contention: start over.
    const bool first = cpu0_ < 0 || now - wall0_ > std::chrono::milliseconds(250);
    const double share = first ? 1.0 : double(cpu - cpu0_) / wall;
    wall0_ = now;
    cpu0_ = cpu;
    if (!first && share < kLow) shared_ = true;
    if (!first && share > kHigh) shared_ = false;
    return shared_;
  }

 private:
  static constexpr double kLow = 0.80, kHigh = 0.92;
  static int64_t thread_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  bool enabled_ = [] {
    const char* env = std::getenv("AQUAKV_ADAPT");
    return env == nullptr || std::string(env) != "0";
  }();
  bool shared_ = false;
  Clock::time_point wall0_{};
  int64_t cpu0_ = -1;
};

Contention g_contention;
uint64_t g_inline_regions = 0;

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
  std::lock_guard<std::mutex> lock(g_run_mu);
  pool().resize(n);
  openblas_set_num_threads(n);
}

int num_threads() { return pool().size(); }

void set_parallel_adaptive(bool on) {
  std::lock_guard<std::mutex> lock(g_run_mu);
  g_contention.set_enabled(on);
}

PoolStats pool_stats() {
  std::lock_guard<std::mutex> lock(g_run_mu);
  PoolStats st = pool().stats();
  st.inline_regions = g_inline_regions;
  return st;
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (Pool::in_worker || pool().size() == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> lock(g_run_mu);
  // Nested parallel_for calls from inside the region run inline (they would otherwise wait for
  // g_run_mu, held here, forever), whether the region runs on the pool or inline.
  Pool::in_worker = true;
  struct Reset { ~Reset() { Pool::in_worker = false; } } reset;
  if (g_contention.shared(pool().stats().sleep_ns)) {
    ++g_inline_regions;
    fn(0, n);
    return;
  }
  pool().run(n, fn, grain);
}

}  // namespace aquakv
