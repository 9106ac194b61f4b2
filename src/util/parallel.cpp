#include "aquakv/util/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace aquakv {
namespace {

// Workers wait for a generation counter to change, run their slice, and count down.
class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    quit_ = false;
    // New workers start from the current generation; starting from 0 would make them run a
    // stale (already finished) job with fn_ == nullptr after a resize.
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i, g = gen_] { loop(i, g); });
  }

  void run(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
    const int t = size();
    const int64_t blocks = (n + grain - 1) / grain;
    std::unique_lock<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    blocks_ = blocks;
    pending_ = t - 1;
    ++gen_;
    lock.unlock();
    cv_.notify_all();
    slice(0);
    lock.lock();
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

  static thread_local bool in_worker;

 private:
  void slice(int i) {
    const int t = size();
    const int64_t b0 = blocks_ * i / t, b1 = blocks_ * (i + 1) / t;
    const int64_t lo = std::min(n_, b0 * grain_), hi = std::min(n_, b1 * grain_);
    if (lo < hi) (*fn_)(lo, hi);
  }

  void loop(int i, uint64_t seen) {
    in_worker = true;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return quit_ || gen_ != seen; });
      if (quit_) return;
      seen = gen_;
      lock.unlock();
      slice(i);
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, blocks_ = 0;
  int pending_ = 0;
  uint64_t gen_ = 0;
  bool quit_ = false;
};

thread_local bool Pool::in_worker = false;

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

std::mutex g_run_mu;

}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
  pool().resize(n);
  openblas_set_num_threads(n);
}

int num_threads() { return pool().size(); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (Pool::in_worker || pool().size() == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> lock(g_run_mu);
  Pool::in_worker = true;  // nested parallel_for calls from the caller's slice run inline
  pool().run(n, fn, grain);
  Pool::in_worker = false;
}

}  // namespace aquakv
