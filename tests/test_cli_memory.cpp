// Peak memory of `aquakv generate` on a long prompt (issue 9 item 6): the process's peak RSS
// (the kernel's high-water mark, ru_maxrss of the child) must stay within the model file (its
// mapped size) + the KV cache's live bytes at the end (the timing line's "MiB live") + a fixed
// allowance. The compressed formats code a step's exact rows layer by layer as attention
// finishes with them (KvCache::finish_layer), so no step of exact rows is added for them.
// AQUA-KV (self-calibrated here on a few tokens: its predictors are full rank whatever the
// calibration length) also holds its predictors (the adapter file's bytes, which live bytes do
// not count) and the f32 reconstruction its predictor chain reads (keys and values of one
// layer: 2 x T x C floats); the bound adds both. What the allowance covers, and the
// hand-measured 8192-token figures per format: docs/RESULTS.md, "Memory: what the process
// holds beyond the model and the cache". The prompt is the first kPromptBytes of
// ../shared/data/calibration/wiki.txt (~2,460 tokens) at -c 8192: what grows with the context
// (cache buffers, RoPE tables) is exercised, within the time of a unit test on a 2-core machine.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include "aquakv/engine/model.h"

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
// Allowance beyond model + live cache, MiB: the issue's target is 32; docs/RESULTS.md gives the
// measured spread and what the allowance covers. With f2e90ef this test measured 24.0-25.5 MiB
// beyond (AQUA-KV 26.4-26.8 beyond its adapters and reconstruction) in four runs; the same
// binaries have moved by ~4 MiB with the machine's state (page cache, allocator placement), so
// 31 = the largest of these + 4. Main at e4991d7, just before, measured 32.1-34.7 (AQUA-KV 35.0
// beyond its extras) and fails it on every format.
constexpr double kAllowanceMiB = 31.0;
constexpr size_t kPromptBytes = 10000;

struct Measured {
  int code = -1;
  std::string out;      // stdout and stderr together
  double peak_mib = 0;  // ru_maxrss of the child
};

// Runs the binary with `args` (no shell: the child's ru_maxrss is the binary's own).
Measured run_measured(const std::vector<std::string>& args) {
  Measured r;
  int fd[2];
  if (pipe(fd) != 0) return r;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 1);
    dup2(fd[1], 2);
    close(fd[0]);
    close(fd[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(AQUAKV_CLI));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(AQUAKV_CLI, argv.data());
    _exit(127);
  }
  close(fd[1]);
  char buf[4096];
  for (ssize_t n; (n = read(fd[0], buf, sizeof buf)) > 0;) r.out.append(buf, size_t(n));
  close(fd[0]);
  int st = 0;
  rusage ru{};
  if (wait4(pid, &st, 0, &ru) != pid) return r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.peak_mib = double(ru.ru_maxrss) / 1024.0;  // KiB on Linux
  return r;
}

class CliMemory : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = m;
    const std::string src = std::string(AQUAKV_SHARED_DIR) + "/data/calibration/wiki.txt";
    std::ifstream in(src, std::ios::binary);
    if (!in) GTEST_SKIP() << src << " is not there";
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GE(text.size(), kPromptBytes);
    dir_ = ::testing::TempDir() + "aquakv_memory_" + std::to_string(getpid()) + "_" + GetParam();
    std::filesystem::create_directories(dir_);
    prompt_ = dir_ + "/prompt.txt";
    std::ofstream(prompt_, std::ios::binary) << text.substr(0, kPromptBytes);
    // AQUA-KV's self-calibrated adapters go to this test's own directory (the child inherits it).
    setenv("AQUAKV_CACHE", dir_.c_str(), 1);
  }
  void TearDown() override {
    unsetenv("AQUAKV_CACHE");
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string model_, dir_, prompt_;
};

TEST_P(CliMemory, PeakRssWithinModelPlusLiveCachePlusAllowance) {
  const std::string kv = GetParam();
  const bool aquakv = kv == "aquakv";
  std::vector<std::string> args = {"generate", "-m", model_, "-f", prompt_, "-c", "8192", "-n", "4", "-t", "2",
                                   "--temp", "0", "--kv", kv};
  if (aquakv) {
    // Calibrate first, in a run of its own (a tiny one, as tests/test_cli_generate_aquakv.cpp
    // does), so that the measured run only loads the adapters.
    std::vector<std::string> calib = {"generate", "-m", model_, "-p", "Hello", "-n", "1", "-t", "2", "--temp", "0",
                                      "--kv", "aquakv", "--calib-tokens", "128", "--calib-window", "32"};
    const Measured c = run_measured(calib);
    ASSERT_EQ(c.code, 0) << c.out;
    for (const char* a : {"--calib-tokens", "128", "--calib-window", "32"}) args.push_back(a);
  }
  const Measured r = run_measured(args);
  ASSERT_EQ(r.code, 0) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(prefill: (\d+) tokens)"))) << r.out;
  const int prompt_tokens = std::stoi(m[1]);
  EXPECT_GT(prompt_tokens, 2000) << "the prompt must be long enough to exercise the cache";
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(KV cache \S+: ([0-9.]+) MiB live)"))) << r.out;
  const double live = std::stod(m[1]);
  const double model = double(std::filesystem::file_size(model_)) / kMiB;
  const double beyond = r.peak_mib - model - live;
  // AQUA-KV: its predictors (the adapter file's bytes) and one layer's f32 reconstruction.
  double aquakv_extra = 0.0;
  if (aquakv) {
    int64_t adapter_bytes = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir_))
      if (e.path().extension() == ".aqkv") adapter_bytes += int64_t(e.file_size());
    ASSERT_GT(adapter_bytes, 0) << "no adapter file under " << dir_;
    const aquakv::KvShape shape = aquakv::Model::load(model_)->kv_shape(8192);
    aquakv_extra = double(adapter_bytes + 2 * int64_t(prompt_tokens + 4) * shape.width() * 4) / kMiB;
  }
  std::printf("kv %s: %d prompt tokens, peak RSS %.1f MiB = model %.1f + live KV %.1f + %.1f beyond "
              "(allowance %.1f + %.1f of predictors and reconstruction)\n", kv.c_str(), prompt_tokens, r.peak_mib,
              model, live, beyond, kAllowanceMiB, aquakv_extra);
  EXPECT_GT(live, 0.0);
  EXPECT_LE(beyond, kAllowanceMiB + aquakv_extra) << "peak RSS " << r.peak_mib << " MiB, model " << model
                                                  << " MiB, live KV " << live << " MiB";
}

// The reference cache, compressed formats of each kind (blocks on every row, KIVI's per-channel
// groups with an exact buffer, HIGGS with sinks and buffer) and AQUA-KV (predictors).
INSTANTIATE_TEST_SUITE_P(Formats, CliMemory, ::testing::Values("fp16", "q4_0", "kivi2", "higgs3", "aquakv"));

}  // namespace
