// `aquakv generate` as a user runs it: greedy output, the timing line, and bad input (one-line
// error, non-zero exit): prompt longer than the context, negative -n, malformed numbers,
// unknown flags, unknown KV format, unknown chat template, missing model.
#include <gtest/gtest.h>

#include "cli_runner.h"
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using Result = aquakv::testing::CliResult;
Result run(const std::string& args) { return aquakv::testing::run_cli(args); }

int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

class CliGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = m;
  }
  Result gen(const std::string& args) { return run("generate -m " + model_ + " -t 2 " + args); }
  std::string model_;
};

TEST_F(CliGenerate, GreedyContinuationAndTimingLine) {
  const Result r = gen("-p 'The capital of France is' -n 4 --temp 0");
  ASSERT_EQ(r.code, 0) << r.out;
  // llama.cpp's greedy continuation of these ids starts " Paris." (tests/data goldens).
  EXPECT_EQ(r.out.rfind("The capital of France is Paris.", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("prefill: 5 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode: 4 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("KV cache fp16:"), std::string::npos) << r.out;
}

TEST_F(CliGenerate, ChatWithSeedIsReproducible) {
  const Result a = gen("--chat -p 'Say hello.' -n 8 --seed 7 --kv f32");
  const Result b = gen("--chat -p 'Say hello.' -n 8 --seed 7 --kv f32");
  ASSERT_EQ(a.code, 0) << a.out;
  const auto text = [](const std::string& s) { return s.substr(0, s.find("\nprefill:")); };
  EXPECT_EQ(text(a.out), text(b.out));
  EXPECT_NE(a.out.find("KV cache f32:"), std::string::npos) << a.out;
}

TEST_F(CliGenerate, BadInputIsOneLineAndNonZero) {
  struct Case { std::string args, needle; };
  const Case cases[] = {
      {"-p 'one two three four five six seven eight' -c 4", "context"},
      {"-p hi -n -3", "-n"},
      {"-p hi -n abc", "-n"},
      {"-p hi -c 12x", "-c"},
      {"-p hi --temp warm", "--temp"},
      {"-p hi --top-p 2", "--top-p"},
      {"-p hi --bogus-flag", "bogus"},
      {"-p hi --kv nonsense", "nonsense"},
      {"-p hi --chat --chat-template jinja", "jinja"},
      {"-f /nonexistent/prompt.txt", "/nonexistent/prompt.txt"},
      {"-p hi -f /nonexistent/prompt.txt", "-p and -f"},
  };
  for (const Case& c : cases) {
    const Result r = gen(c.args);
    EXPECT_NE(r.code, 0) << c.args << "\n" << r.out;
    EXPECT_EQ(lines(r.out), 1) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
  }
}

// Like llama.cpp, -c above the training context is allowed with a warning.
TEST_F(CliGenerate, ContextAboveTrainingWarns) {
  const Result r = gen("-p hi -n 1 --temp 0 -c 9000");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("warning: -c 9000 exceeds the model's training context 8192"), std::string::npos) << r.out;
}

TEST(CliGenerateNoModel, MissingModelIsAnError) {
  const Result r = run("generate -m /nonexistent/model.gguf -p hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("/nonexistent/model.gguf"), std::string::npos) << r.out;
}

}  // namespace
