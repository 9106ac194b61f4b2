// The decode scheduler of `aquakv serve` on the real model: conversations decoded together in
// one batch give the same greedy tokens as each one alone; the KV budget queues what does not
// fit (and refuses what never can); an idle conversation moved to a slot file comes back with
// its prefix restored and continues exactly as if it had been recomputed.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include "aquakv/engine/tokenizer.h"
#include "model_fixture.h"
#include "serve/scheduler.h"

using namespace aquakv;
using namespace aquakv::serve;

namespace {

class ServeScheduler : public aquakv::testing::RealModelTest {
 protected:
  void SetUp() override {
    RealModelTest::SetUp();
    if (model_ == nullptr) return;
    tok_ = std::make_unique<Tokenizer>(Tokenizer::from_gguf(model_->gguf()));
    fwd_ = std::make_unique<Forward>(*model_, 2);
  }
  std::vector<int32_t> ids(const std::string& text) const { return tok_->encode(text, true, false); }
  JobInput greedy(const std::string& text, int64_t n) const {
    JobInput in;
    in.prompt = ids(text);
    in.sampling.temperature = 0;
    in.max_tokens = n;
    return in;
  }
  std::unique_ptr<Scheduler> make(const std::string& kv, int max_running, int64_t budget = 0, const std::string& dir = "",
                                   KvEstimate est = {}) {
    SchedulerConfig c;
    c.kv_spec = kv;
    c.kv_label = kv;
    c.n_ctx = 512;
    c.max_running = max_running;
    c.kv_budget = budget;
    c.slot_dir = dir;
    c.slot_idle_s = 0;
    c.prefill_chunk = 32;  // several chunks per prompt: prefill interleaves with decoding
    return std::make_unique<Scheduler>(*fwd_, *tok_, c, est);
  }
  // Everything a job sends: its text and how it ended ("stop"/"length", or "error: ...").
  static std::pair<std::string, std::string> collect(Job& job) {
    std::string text;
    JobEvent e;
    for (;;) {
      EXPECT_TRUE(job.next(e, 120.0)) << "no event within 120 s";
      if (e.kind == JobEvent::kText) text += e.text;
      else if (e.kind == JobEvent::kDone) return {text, e.finish_reason};
      else return {text, "error: " + e.error};
    }
  }
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Forward> fwd_;
};

const std::vector<std::string> kPrompts = {
    "The capital of France is",
    "Here is a list of prime numbers: 2, 3, 5,",
    "A key-value cache stores the keys and values of every past token, so that the next token's attention",
    "def fibonacci(n):",
};

}  // namespace

TEST_F(ServeScheduler, BatchGivesTheSameGreedyTokensAsAlone) {
  for (const std::string kv : {"fp16", "q4_0"}) {
    std::vector<std::pair<std::string, std::string>> alone;
    {
      auto s = make(kv, 1);
      for (const auto& p : kPrompts) alone.push_back(collect(*s->submit(greedy(p, 24))));
    }
    auto s = make(kv, 8);
    std::vector<std::shared_ptr<Job>> jobs;
    for (const auto& p : kPrompts) jobs.push_back(s->submit(greedy(p, 24)));
    for (size_t i = 0; i < jobs.size(); ++i) {
      const auto got = collect(*jobs[i]);
      EXPECT_EQ(got, alone[i]) << kv << " prompt " << i;
      EXPECT_FALSE(got.first.empty());
    }
    s->wait_idle();
    const auto m = s->metrics();
    EXPECT_GE(m.max_batch, 3) << kv << ": the conversations were not decoded together";
    EXPECT_EQ(m.jobs_done, int64_t(kPrompts.size()));
  }
}

TEST_F(ServeScheduler, StopStringsAndLimitsEndAJob) {
  auto s = make("fp16", 4);
  const auto full = collect(*s->submit(greedy(kPrompts[1], 16)));
  ASSERT_EQ(full.second, "length");
  ASSERT_GE(full.first.size(), 4u);
  JobInput in = greedy(kPrompts[1], 16);
  in.stop = {full.first.substr(2, 2)};
  const auto cut = collect(*s->submit(in));
  EXPECT_EQ(cut.second, "stop");
  EXPECT_EQ(cut.first, full.first.substr(0, full.first.find(in.stop[0])));
  // A prompt that leaves no room in the context is refused.
  JobInput big = greedy(kPrompts[0], 4);
  big.prompt.assign(600, big.prompt[1]);
  EXPECT_THROW(s->submit(big), ApiError);
}

TEST_F(ServeScheduler, BudgetQueuesWhatDoesNotFitAndRefusesWhatNeverCan) {
  const KvEstimate est = measure_kv_estimate(*fwd_, "q8_0", 512, 128);
  ASSERT_GT(est.per_token, 0);
  // A budget below two of the smallest conversations and above the largest one.
  int64_t small = INT64_MAX, large = 0;
  for (const auto& p : kPrompts) {
    small = std::min(small, est.bytes(int64_t(ids(p).size()) + 24));
    large = std::max(large, est.bytes(int64_t(ids(p).size()) + 24));
  }
  const int64_t budget = 2 * small - 1;
  ASSERT_LE(large, budget);
  std::vector<std::pair<std::string, std::string>> alone;
  {
    auto s = make("q8_0", 1);
    for (const auto& p : kPrompts) alone.push_back(collect(*s->submit(greedy(p, 24))));
  }
  // Room for one conversation at a time: they run one after another, with the same outputs.
  auto s = make("q8_0", 8, budget, "", est);
  std::vector<std::shared_ptr<Job>> jobs;
  for (const auto& p : kPrompts) jobs.push_back(s->submit(greedy(p, 24)));
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(collect(*jobs[i]), alone[i]) << i;
  EXPECT_EQ(s->metrics().max_batch, 1);
  s->wait_idle();
  EXPECT_LE(s->metrics().live_kv_bytes, budget);
  // Twice the budget's worth of tokens can never run: refused at once.
  JobInput huge = greedy(kPrompts[0], 400);
  EXPECT_THROW(s->submit(huge), ApiError);
}

TEST_F(ServeScheduler, IdleConversationMovesToDiskAndComesBack) {
  const std::string dir = ::testing::TempDir() + "serve_slots_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string first = kPrompts[2];
  for (const std::string kv : {"fp16", "q4_0"}) {
    // Kept in memory between the requests (no slot directory): the idle slot is reused.
    std::string reply, again, recomputed;
    {
      auto s = make(kv, 2);
      reply = collect(*s->submit(greedy(first, 20))).first;
      s->wait_idle();
      again = collect(*s->submit(greedy(first + reply + " In short,", 20))).first;
      EXPECT_GE(s->metrics().reused_tokens, int64_t(ids(first).size()) - 1);
    }
    const std::string second = first + reply + " In short,";
    // Recomputed by a scheduler that keeps nothing: the same tokens for a lossless format (a
    // lossy one attends over the prompt's exact rows while it is computed in one chunk, so it
    // may differ from a conversation that kept its generated rows as they were stored).
    {
      auto s = make(kv, 2);
      recomputed = collect(*s->submit(greedy(second, 20))).first;
    }
    if (kv == "fp16") {
      EXPECT_EQ(recomputed, again);
    }
    // With a slot directory and no idle time: the conversation goes to disk between requests.
    auto s = make(kv, 2, 0, dir);
    ASSERT_EQ(collect(*s->submit(greedy(first, 20))).first, reply);
    s->wait_idle();
    for (int i = 0; i < 200 && s->metrics().parked == 0; ++i) usleep(10000);
    ASSERT_EQ(s->metrics().parked, 1) << kv;
    EXPECT_EQ(s->metrics().idle_slots, 0);
    const auto back = collect(*s->submit(greedy(second, 20)));
    EXPECT_EQ(back.first, again) << kv;
    const auto m = s->metrics();
    EXPECT_EQ(m.slots_restored, 1);
    EXPECT_GE(m.reused_tokens, int64_t(ids(first).size()) - 1);
  }
  std::filesystem::remove_all(dir);
}
