// The decode scheduler (scheduler.h).
#include "scheduler.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "../prompt_cache.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"

namespace aquakv::serve {

bool Job::next(JobEvent& e, double timeout_s) {
  std::unique_lock lk(m_);
  if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !events_.empty(); })) return false;
  e = std::move(events_.front());
  events_.pop_front();
  return true;
}

void Job::push(JobEvent e) {
  {
    std::lock_guard lk(m_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

struct Scheduler::Slot {
  std::unique_ptr<KvCache> cache;
  int seq = 0;
  std::vector<int32_t> tokens;  // what the cache holds, in order
  std::vector<float> logits;    // after tokens.back() (when the last step computed them)
  std::shared_ptr<Job> job;     // null once finished
  std::vector<int32_t> prompt;
  int64_t n_done = 0;           // prompt tokens the cache holds
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StopScanner> stop;
  int64_t n_gen = 0, reserve = 0, bytes = 0;
  bool decoding = false, failed = false;
  Usage usage;
  Clock::time_point last_used;
};

namespace {

int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  return std::mismatch(a.begin(), a.begin() + std::ptrdiff_t(n), b.begin()).first - a.begin();
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

Scheduler::Scheduler(Forward& fwd, const Tokenizer& tok, SchedulerConfig cfg, KvEstimate estimate)
    : fwd_(fwd), tok_(tok), cfg_(std::move(cfg)), est_(estimate), n_vocab_(fwd.model().config().n_vocab) {
  mx_.budget = cfg_.kv_budget;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  JobEvent e{JobEvent::kError, "", "", {}, 503, "the server is shutting down"};
  for (auto& j : queue_) j->push(e);
  for (auto& s : active_)
    if (s->job) s->job->push(e);
  std::error_code ec;
  for (const auto& p : parked_) std::filesystem::remove(p.path, ec);
}

std::shared_ptr<Job> Scheduler::submit(JobInput in) {
  const int64_t n = int64_t(in.prompt.size());
  if (n == 0) throw ApiError(400, "the prompt is empty after tokenization", "prompt");
  if (n >= cfg_.n_ctx)
    throw ApiError(400, fmt::format("the prompt is {} tokens; the context holds {} and must leave room to generate", n, cfg_.n_ctx),
                   "messages");
  for (int32_t id : in.prompt)
    if (id < 0 || id >= n_vocab_) throw ApiError(400, fmt::format("token id {} is outside the vocabulary", id), "prompt");
  const int64_t need = est_.bytes(std::min(cfg_.n_ctx, n + in.max_tokens));
  if (cfg_.kv_budget > 0 && need > cfg_.kv_budget)
    throw ApiError(400,
                   fmt::format("this conversation needs about {:.1f} MiB of KV cache ({} + {} tokens in {}), more than the "
                               "server's --kv-budget of {:.1f} MiB; send a shorter prompt or a smaller max_tokens",
                               double(need) / 1048576.0, n, in.max_tokens, cfg_.kv_label, double(cfg_.kv_budget) / 1048576.0),
                   "max_tokens");
  auto job = std::make_shared<Job>(std::move(in));
  {
    std::lock_guard lk(m_);
    if (int64_t(queue_.size()) >= cfg_.max_queue)
      throw ApiError(503, fmt::format("the server is busy: {} requests are waiting; try again later", queue_.size()), "",
                     "server_busy");
    queue_.push_back(job);
    mx_.prompt_tokens += n;
  }
  cv_.notify_all();
  return job;
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard lk(m_);
  SchedulerMetrics m = mx_;
  m.queued = int64_t(queue_.size());
  return m;
}

void Scheduler::wait_idle() {
  for (;;) {
    {
      std::lock_guard lk(m_);
      if (queue_.empty() && active_.empty()) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int64_t Scheduler::reserved_locked() const {
  int64_t r = 0;
  for (const auto& s : active_) r += s->reserve;
  for (const auto& s : idle_) r += s->bytes;
  return r;
}

int64_t Scheduler::live_bytes() const {
  int64_t b = 0;
  for (const auto& s : active_) b += s->cache->live_bytes();
  for (const auto& s : idle_) b += s->bytes;
  return b;
}

// Frees idle slots (oldest first: to disk with --slot-dir, else dropped) until `need` more
// bytes fit the budget. False when even without idle slots they do not.
bool Scheduler::make_room(int64_t need, std::unique_lock<std::mutex>&) {
  if (cfg_.kv_budget <= 0) return true;
  while (reserved_locked() + need > cfg_.kv_budget) {
    if (idle_.empty()) return false;
    auto s = std::move(idle_.back());
    idle_.pop_back();
    park(std::move(s));
  }
  return true;
}

void Scheduler::park(std::unique_ptr<Slot> s) {
  if (cfg_.slot_dir.empty() || s->tokens.empty()) return;
  const std::string path = fmt::format("{}/aquakv-slot-{}-{}.session", cfg_.slot_dir, ::getpid(), ++park_serial_);
  try {
    const auto saved = cli::save_prompt_cache(path, *s->cache, s->seq, s->tokens, s->logits, cfg_.slot_spec,
                                              SessionSaveOptions{cfg_.slot_zstd, 3});
    parked_.push_front({path, s->tokens, saved.stats.file_bytes});
    ++mx_.slots_parked;
  } catch (const Error& e) {
    std::fprintf(stderr, "aquakv serve: cannot move an idle conversation to %s: %s\n", path.c_str(), e.what());
  }
  while (int64_t(parked_.size()) > 4 * cfg_.max_idle_slots) {
    std::error_code ec;
    std::filesystem::remove(parked_.back().path, ec);
    parked_.pop_back();
  }
}

void Scheduler::park_old_idle() {
  if (cfg_.slot_dir.empty()) return;
  while (!idle_.empty() && seconds_since(idle_.back()->last_used) >= cfg_.slot_idle_s) {
    auto s = std::move(idle_.back());
    idle_.pop_back();
    park(std::move(s));
  }
}

// A slot for a job: an idle slot or a parked file holding a long enough prefix of the prompt
// (the same conversation coming back), else a new cache.
std::unique_ptr<Scheduler::Slot> Scheduler::slot_for(const JobInput& in, std::shared_ptr<Job> job) {
  auto reusable = [&](int64_t lcp, size_t held) { return lcp >= cfg_.min_reuse && 2 * lcp >= int64_t(held); };
  std::unique_ptr<Slot> s;
  auto best_idle = idle_.end();
  int64_t best = 0;
  for (auto it = idle_.begin(); it != idle_.end(); ++it) {
    const int64_t l = common_prefix((*it)->tokens, in.prompt);
    if (reusable(l, (*it)->tokens.size()) && l > best) best = l, best_idle = it;
  }
  auto best_park = parked_.end();
  int64_t bestp = 0;
  for (auto it = parked_.begin(); it != parked_.end(); ++it) {
    const int64_t l = common_prefix(it->tokens, in.prompt);
    if (reusable(l, it->tokens.size()) && l > best && l > bestp) bestp = l, best_park = it;
  }
  const int64_t n = int64_t(in.prompt.size());
  if (best_idle != idle_.end() && best_park == parked_.end()) {
    s = std::move(*best_idle);
    idle_.erase(best_idle);
    const int64_t keep = std::min(best, n - 1);
    int64_t kept = s->cache->truncate(s->seq, keep);
    if (kept == 0) s->cache->clear(s->seq);
    s->tokens.resize(size_t(kept));
    s->n_done = kept;
    s->logits.clear();
  } else {
    s = std::make_unique<Slot>();
    s->cache = make_cache(cfg_.kv_spec, fwd_.model().kv_shape(cfg_.n_ctx));
    s->seq = s->cache->add_sequence();
    if (best_park != parked_.end()) {
      try {
        const auto r = cli::restore_prompt_cache(best_park->path, *s->cache, s->seq, in.prompt);
        s->n_done = r.n_reused;
        s->tokens.assign(in.prompt.begin(), in.prompt.begin() + r.n_reused);
        s->logits = r.logits;
        ++mx_.slots_restored;
      } catch (const Error& e) {
        std::fprintf(stderr, "aquakv serve: cannot restore %s (recomputing): %s\n", best_park->path.c_str(), e.what());
        s->cache->clear(s->seq);
        s->n_done = 0;
      }
      std::error_code ec;
      std::filesystem::remove(best_park->path, ec);
      parked_.erase(best_park);
    }
  }
  s->job = std::move(job);
  s->prompt = in.prompt;
  s->sampler = std::make_unique<Sampler>(in.sampling);
  s->stop = std::make_unique<StopScanner>(in.stop);
  s->n_gen = 0;
  s->decoding = s->n_done == n && int64_t(s->logits.size()) == n_vocab_;
  s->failed = false;
  s->usage = {n, 0, s->n_done};
  s->reserve = est_.bytes(std::min(cfg_.n_ctx, n + in.max_tokens));
  s->last_used = Clock::now();
  mx_.reused_tokens += s->n_done;
  return s;
}

void Scheduler::admit(std::unique_lock<std::mutex>& lk) {
  // Jobs past their time limit while waiting end with an error.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->cancelled() || seconds_since((*it)->created()) > cfg_.time_limit_s) {
      if (!(*it)->cancelled())
        (*it)->push({JobEvent::kError, "", "", {}, 503, "timed out waiting for room in the KV budget"});
      ++mx_.jobs_failed;
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  // First come, first served: the head waits until it fits, the others wait behind it.
  while (!queue_.empty() && int64_t(active_.size()) < cfg_.max_running) {
    const auto& job = queue_.front();
    const JobInput& in = job->input();
    const int64_t need = est_.bytes(std::min(cfg_.n_ctx, int64_t(in.prompt.size()) + in.max_tokens));
    // Idle slots (the job's own conversation among them) go to disk, oldest first, until the
    // job fits; a conversation whose slot was moved comes back from its file.
    if (!make_room(need, lk)) break;
    try {
      active_.push_back(slot_for(in, job));
    } catch (const Error& e) {
      job->push({JobEvent::kError, "", "", {}, 500, e.what()});
      ++mx_.jobs_failed;
    }
    queue_.pop_front();
  }
}

void Scheduler::prefill_step(Slot& s) {
  const int64_t n = int64_t(s.prompt.size());
  const int64_t m = std::min(cfg_.prefill_chunk, n - s.n_done);
  s.logits.resize(size_t(n_vocab_));
  const auto t0 = Clock::now();
  fwd_.eval(*s.cache, s.seq, std::span<const int32_t>(s.prompt.data() + s.n_done, size_t(m)), s.logits.data(), false);
  s.tokens.insert(s.tokens.end(), s.prompt.begin() + s.n_done, s.prompt.begin() + s.n_done + m);
  s.n_done += m;
  s.decoding = s.n_done == n;
  std::lock_guard lk(m_);
  mx_.prefill_tokens += m;
  mx_.prefill_seconds += seconds_since(t0);
}

void Scheduler::emit(Slot& s, int32_t token) {
  const std::string out = s.stop->push(tok_.piece(token));
  if (!out.empty()) s.job->push({JobEvent::kText, out, "", {}, 0, ""});
}

void Scheduler::finish(Slot& s, const std::string& reason) {
  if (!s.stop->stopped()) {
    const std::string rest = s.stop->flush();
    if (!rest.empty()) s.job->push({JobEvent::kText, rest, "", {}, 0, ""});
  }
  s.usage.completion_tokens = s.n_gen;
  s.job->push({JobEvent::kDone, "", reason, s.usage, 0, ""});
  s.job.reset();
  s.last_used = Clock::now();
}

void Scheduler::decode_step() {
  std::vector<KvCache*> caches;
  std::vector<int> seqs;
  std::vector<int32_t> toks;
  std::vector<Slot*> batch;
  int64_t produced = 0;
  for (auto& sp : active_) {
    Slot& s = *sp;
    if (!s.decoding || !s.job) continue;
    if (s.job->cancelled()) {
      s.job.reset();
      continue;
    }
    const int32_t t = s.sampler->sample(s.logits);
    if (tok_.is_eog(t) && !s.job->input().ignore_eos) {
      finish(s, "stop");
      continue;
    }
    ++s.n_gen;
    ++produced;
    emit(s, t);
    if (s.stop->stopped()) {
      finish(s, "stop");
    } else if (s.n_gen >= s.job->input().max_tokens || s.cache->n_tokens(s.seq) >= cfg_.n_ctx ||
               seconds_since(s.job->created()) > cfg_.time_limit_s) {
      finish(s, "length");
    } else {
      caches.push_back(s.cache.get());
      seqs.push_back(s.seq);
      toks.push_back(t);
      batch.push_back(&s);
    }
  }
  const auto t0 = Clock::now();
  if (!batch.empty()) {
    std::vector<float> logits(batch.size() * size_t(n_vocab_));
    try {
      fwd_.eval_batch(caches, seqs, toks, logits.data());
      for (size_t b = 0; b < batch.size(); ++b) {
        batch[b]->tokens.push_back(toks[b]);
        batch[b]->logits.assign(logits.begin() + std::ptrdiff_t(b * size_t(n_vocab_)),
                                logits.begin() + std::ptrdiff_t((b + 1) * size_t(n_vocab_)));
      }
    } catch (const Error& e) {
      for (Slot* s : batch) {
        s->job->push({JobEvent::kError, "", "", {}, 500, e.what()});
        s->job.reset();
        s->failed = true;
      }
    }
  }
  std::lock_guard lk(m_);
  const auto now = Clock::now();
  mx_.generated_tokens += produced;
  mx_.decode_seconds += std::chrono::duration<double>(now - t0).count();
  mx_.max_batch = std::max<int64_t>(mx_.max_batch, int64_t(batch.size()));
  if (produced > 0) recent_.emplace_back(now, produced);
  while (!recent_.empty() && std::chrono::duration<double>(now - recent_.front().first).count() > 10.0) recent_.pop_front();
  int64_t sum = 0;
  for (const auto& r : recent_) sum += r.second;
  const double span = recent_.empty() ? 0.0 : std::chrono::duration<double>(now - recent_.front().first).count();
  mx_.decode_tps = span > 0.5 ? double(sum) / span : 0.0;
}

void Scheduler::loop() {
  std::unique_lock lk(m_);
  while (!stop_) {
    admit(lk);
    if (active_.empty()) {
      park_old_idle();
      mx_.running = mx_.prefilling = 0;
      mx_.idle_slots = int64_t(idle_.size());
      mx_.parked = int64_t(parked_.size());
      mx_.live_kv_bytes = live_bytes();
      mx_.reserved_kv_bytes = reserved_locked();
      cv_.wait_for(lk, std::chrono::milliseconds(250), [&] { return stop_ || !queue_.empty(); });
      continue;
    }
    lk.unlock();
    // One prefill chunk (of the oldest prefilling slot), then one decode step for every
    // decoding slot: a long prompt delays the others by one chunk per step, never the whole.
    for (auto& s : active_) {
      if (s->decoding || !s->job) continue;
      try {
        if (s->job->cancelled()) {
          s->job.reset();
        } else {
          prefill_step(*s);
        }
      } catch (const Error& e) {
        s->job->push({JobEvent::kError, "", "", {}, 500, e.what()});
        s->job.reset();
        s->failed = true;
      }
      break;
    }
    decode_step();
    lk.lock();
    int64_t dec = 0, pre = 0;
    for (auto it = active_.begin(); it != active_.end();) {
      Slot& s = **it;
      if (s.job) {
        ++(s.decoding ? dec : pre);
        ++it;
        continue;
      }
      ++(s.failed ? mx_.jobs_failed : mx_.jobs_done);
      if (!s.failed) {
        s.bytes = s.cache->live_bytes();
        idle_.push_front(std::move(*it));
      }
      it = active_.erase(it);
    }
    while (int64_t(idle_.size()) > cfg_.max_idle_slots) {
      auto s = std::move(idle_.back());
      idle_.pop_back();
      park(std::move(s));
    }
    mx_.running = dec;
    mx_.prefilling = pre;
    mx_.max_in_use = std::max(mx_.max_in_use, dec + pre);
    mx_.idle_slots = int64_t(idle_.size());
    mx_.parked = int64_t(parked_.size());
    mx_.live_kv_bytes = live_bytes();
    mx_.reserved_kv_bytes = reserved_locked();
  }
}

}  // namespace aquakv::serve
