// The decode scheduler of `aquakv serve`: continuous batching under a KV memory budget. Owns:
// the queue of submitted generations, their slots (one KvCache object per conversation, one
// sequence in it, as Forward::eval_batch needs distinct caches), admission by estimated KV
// bytes (kv_budget.h), chunked prefill, one batched decode step for all running slots per
// iteration (each with its own sampler and stop strings), idle slots kept for prefix reuse,
// moved to session files in --slot-dir under budget pressure or after --slot-idle-s, and
// restored on the conversation's next message. Not: HTTP or JSON (serve_http.cpp,
// api_request.h).
//
// One thread (the loop) owns the model, the slots and the caches; request threads only submit
// jobs and read their events.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/sampler.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/kv/kv_cache.h"
#include "api_request.h"
#include "kv_budget.h"

namespace aquakv::serve {

using Clock = std::chrono::steady_clock;

struct SchedulerConfig {
  std::string kv_spec;          // resolved --kv spelling for make_cache
  std::string kv_label;         // what /metrics calls the format
  int64_t n_ctx = 4096;         // per conversation
  int64_t kv_budget = 0;        // bytes; 0 = no budget
  int max_running = 8;          // slots decoding at once (the batch)
  int64_t max_queue = 64;       // waiting jobs before 503
  double time_limit_s = 600;    // per job, queueing included
  int64_t prefill_chunk = 256;  // tokens of one prefill step between decode steps
  std::string slot_dir;         // idle slots go to session files here ("" = dropped)
  std::string slot_spec;        // format of the slot files ("" = the cache's own, e.g. aquakv for fp16)
  bool slot_zstd = false;       // zstd sections of slot files where it saves >= 3%
  double slot_idle_s = 60;      // idle slots older than this move to disk (with slot_dir)
  int64_t min_reuse = 16;       // least common prefix (tokens) for reusing a slot or file
  int64_t max_idle_slots = 64;  // idle slots kept in memory (the oldest go first)
};

// What a job's reader receives, in order: text pieces, then one end (done or error).
struct JobEvent {
  enum Kind { kText, kDone, kError } kind = kText;
  std::string text;
  std::string finish_reason;  // kDone: "stop" or "length"
  Usage usage;
  int status = 0;             // kError: HTTP status
  std::string error;
};

struct JobInput {
  std::vector<int32_t> prompt;
  SamplerParams sampling;
  int64_t max_tokens = 16;
  std::vector<std::string> stop;
  bool ignore_eos = false;  // end-of-generation tokens are generated like any other (benchmarks)
};

class Job {
 public:
  explicit Job(JobInput in) : in_(std::move(in)), created_(Clock::now()) {}
  // Next event, waiting up to `timeout_s`; false on timeout.
  bool next(JobEvent& e, double timeout_s);
  void cancel() { cancelled_ = true; }  // the client went away: the slot is released
  bool cancelled() const { return cancelled_; }
  const JobInput& input() const { return in_; }
  Clock::time_point created() const { return created_; }
  void push(JobEvent e);

 private:
  JobInput in_;
  Clock::time_point created_;
  std::atomic<bool> cancelled_{false};
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<JobEvent> events_;
};

struct SchedulerMetrics {
  int64_t running = 0, prefilling = 0, queued = 0, idle_slots = 0, parked = 0;
  int64_t live_kv_bytes = 0, reserved_kv_bytes = 0, budget = 0;
  int64_t prompt_tokens = 0, prefill_tokens = 0, reused_tokens = 0, generated_tokens = 0;
  int64_t jobs_done = 0, jobs_failed = 0, slots_parked = 0, slots_restored = 0;
  double decode_tps = 0;  // generated tokens/s over the recent window (all slots)
  double decode_seconds = 0, prefill_seconds = 0;
  int64_t max_batch = 0;  // largest decode batch seen
  int64_t max_in_use = 0;  // most slots admitted at once (prefilling or decoding)
};

class Scheduler {
 public:
  Scheduler(Forward& fwd, const Tokenizer& tok, SchedulerConfig cfg, KvEstimate estimate);
  ~Scheduler();  // stops the loop; unfinished jobs end with an error event

  // Queues a job. Throws ApiError: 400 when the prompt leaves no room in the context or the
  // conversation could never fit the budget, 503 when the queue is full.
  std::shared_ptr<Job> submit(JobInput in);
  SchedulerMetrics metrics() const;
  const SchedulerConfig& config() const { return cfg_; }
  const KvEstimate& estimate() const { return est_; }
  // Waits until nothing is queued or running (tests).
  void wait_idle();

 private:
  struct Slot;
  struct Parked {
    std::string path;
    std::vector<int32_t> tokens;
    uint64_t bytes = 0;
  };
  void loop();
  void admit(std::unique_lock<std::mutex>& lk);
  bool make_room(int64_t need, std::unique_lock<std::mutex>& lk);
  std::unique_ptr<Slot> slot_for(const JobInput& in, std::shared_ptr<Job> job);
  void prefill_step(Slot& s);
  void decode_step();
  void emit(Slot& s, int32_t token);
  void finish(Slot& s, const std::string& reason);
  void park(std::unique_ptr<Slot> s);
  void park_old_idle();
  int64_t reserved_locked() const;
  int64_t live_bytes() const;

  Forward& fwd_;
  const Tokenizer& tok_;
  SchedulerConfig cfg_;
  KvEstimate est_;
  int64_t n_vocab_;

  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::unique_ptr<Slot>> active_;  // prefilling or decoding
  std::list<std::unique_ptr<Slot>> idle_;      // finished, front = most recently used
  std::list<Parked> parked_;                   // on disk, front = most recent
  uint64_t park_serial_ = 0;
  SchedulerMetrics mx_;
  std::deque<std::pair<Clock::time_point, int64_t>> recent_;  // (time, tokens) of decode steps
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace aquakv::serve
