// The token/channel/layer reduction formats through the tool, the way a user runs them:
// perplexity with each of them on a short window (the report shows fewer bits than fp16 where
// they store less, and ClusterKV's attended share), and malformed specs refused with one
// "aquakv: error:" line and status 1 before any work.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "cli_runner.h"

namespace {

namespace fs = std::filesystem;

class CliReduction : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL not set";
    model_ = m;
    dir_ = fs::temp_directory_path() / ("aquakv_cli_reduction_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::string t;
    for (int i = 0; i < 60; ++i) t += "The quick brown fox jumps over the lazy dog near the river bank. ";
    text_ = (dir_ / "text.txt").string();
    std::ofstream(text_) << t;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  aquakv::testing::CliResult ppl(const std::string& kv) const {
    return aquakv::testing::run_cli("perplexity -m " + model_ + " -f " + text_ + " -c 256 --chunks 1 -t 2 --kv " + kv);
  }
  // "cache NAME: X bits per value" of the report.
  static double bits(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex(R"(: ([0-9.]+) bits per value over)"))) return -1;
    return std::stod(m[1]);
  }
  std::string model_, text_;
  fs::path dir_;
};

TEST_F(CliReduction, EveryFormatRunsAndCountsItsBytes) {
  struct Case {
    std::string kv;
    double max_bits;
  } cases[] = {{"l2evict:0.5,r=16,e=0+fp16", 8.3}, {"think:0.5,b=32", 14.0}, {"minicache:10,b=32", 13.0},
               {"l2evict:0.5,r=16,e=0+higgs2,b=16", 2.0}};
  for (const auto& c : cases) {
    const auto r = ppl(c.kv);
    ASSERT_EQ(r.code, 0) << c.kv << "\n" << r.out;
    EXPECT_GT(bits(r.out), 0.5) << r.out;
    EXPECT_LT(bits(r.out), c.max_bits) << r.out;
  }
  const auto r = ppl("clusterkv:64,r=32,m=32");
  ASSERT_EQ(r.code, 0) << r.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(rows attended: ([0-9.]+)%)"))) << r.out;
  EXPECT_LT(std::stod(m[1]), 90.0) << r.out;
}

// KVSharer end to end: a plan from a short search, perplexity with it (2 of 30 layers shared:
// fp16's 16 bits x 28/30), AQUA-KV adapters fitted along the plan's chain, and files that do
// not fit refused with one line.
TEST_F(CliReduction, KvSharerCalibratesAndRuns) {
  const std::string plan = (dir_ / "s.plan").string(), ad = (dir_ / "s.aqkv").string();
  auto r = aquakv::testing::run_cli("calibrate --method kvsharer -m " + model_ + " -f " + text_ +
                                    " --tokens 128 --window 64 --share-layers 2 --share-threshold -1 -t 2 -q -o " + plan);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("2 of 30 layers shared"), std::string::npos) << r.out;
  r = ppl("kvsharer:" + plan);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NEAR(bits(r.out), 16.0 * 28 / 30, 0.001) << r.out;
  r = aquakv::testing::run_cli("calibrate -m " + model_ + " -f " + text_ + " --tokens 256 --window 128 --share-plan " + plan +
                               " -t 2 -q -o " + ad);
  ASSERT_EQ(r.code, 0) << r.out;
  r = ppl("kvsharer:" + plan + "+aquakv:" + ad + ",b=32");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(bits(r.out), 1.0) << r.out;
  EXPECT_LT(bits(r.out), 8.0) << r.out;
  // Adapters of the plan's chain on the whole model, a plan file that is not one, no text.
  for (const auto& [cmd, what] : {std::pair{std::string("perplexity -m ") + model_ + " -f " + text_ + " -c 256 --chunks 1 --kv aquakv:" + ad, "layers"},
                                  {"perplexity -m " + model_ + " -f " + text_ + " -c 256 --chunks 1 --kv kvsharer:" + text_, "bad magic"},
                                  {"calibrate --method kvsharer -m " + model_ + " -o " + (dir_ / "x.plan").string(), "-f"}}) {
    r = aquakv::testing::run_cli(cmd);
    EXPECT_EQ(r.code, 1) << cmd << "\n" << r.out;
    EXPECT_NE(r.out.find("aquakv: error: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(what), std::string::npos) << r.out;
  }
  EXPECT_FALSE(fs::exists(dir_ / "x.plan"));
}

// LoRC end to end: plans from the model's weights; at full rank (every dimension kept, no sinks)
// perplexity equals fp16's up to the latents' fp16 rounding; a uniform half-rank plan stores 8
// bits per value (plus the 4 exact sinks); bad settings and a QK-norm model are refused.
TEST_F(CliReduction, LorcPlansFromTheWeightsAndRuns) {
  const std::string full = (dir_ / "full.lorc").string(), half = (dir_ / "half.lorc").string();
  auto r = aquakv::testing::run_cli("calibrate --method lorc --keep 1 -m " + model_ + " -o " + full);
  ASSERT_EQ(r.code, 0) << r.out;
  r = aquakv::testing::run_cli("calibrate --method lorc --keep 0.5 --lorc-schedule uniform -m " + model_ + " -o " + half);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("8.000 bits per value"), std::string::npos) << r.out;
  auto ppl_of = [](const std::string& out) {
    std::smatch m;
    return std::regex_search(out, m, std::regex(R"(PPL = ([0-9.]+))")) ? std::stod(m[1]) : -1.0;
  };
  const auto base = ppl("fp16"), a = ppl("lorc:" + full + ",p=0"), b = ppl("lorc:" + half);
  ASSERT_EQ(base.code, 0) << base.out;
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_GT(ppl_of(base.out), 1.0) << base.out;
  EXPECT_NEAR(ppl_of(a.out) / ppl_of(base.out), 1.0, 1e-3) << a.out;
  EXPECT_NEAR(bits(a.out), 16.0, 1e-6) << a.out;
  // 8 bits for the latents of 251 tokens, 16 for the 4 sinks.
  EXPECT_NEAR(bits(b.out), (8.0 * 251 + 16.0 * 4) / 255, 0.002) << b.out;
  std::vector<std::pair<std::string, std::string>> bad = {
      {"calibrate --method lorc --keep 0 -m " + model_ + " -o " + (dir_ / "x.lorc").string(), "--keep"},
      {"calibrate --method lorc --lorc-center -m " + model_ + " -o " + (dir_ / "x.lorc").string(), "-f"},
      {"perplexity -m " + model_ + " -f " + text_ + " -c 256 --chunks 1 --kv lorc:" + text_, "bad magic"}};
  if (const char* g = std::getenv("AQUAKV_GEMMA_MODEL"); g != nullptr && *g != '\0')
    bad.push_back({"calibrate --method lorc -m " + std::string(g) + " -o " + (dir_ / "x.lorc").string(), "QK-norm"});
  for (const auto& [cmd, what] : bad) {
    r = aquakv::testing::run_cli(cmd);
    EXPECT_NE(r.code, 0) << cmd << "\n" << r.out;
    EXPECT_NE(r.out.find(what), std::string::npos) << cmd << "\n" << r.out;
  }
  EXPECT_FALSE(fs::exists(dir_ / "x.lorc"));
}

TEST_F(CliReduction, BadSpecsAreOneLineErrors) {
  for (const std::string kv : {"l2evict:2+fp16", "l2evict:0.5", "l2evict:0.5+kivi2", "think:1", "clusterkv:0",
                               "minicache:99", "think:0.4,k=higgs2"}) {
    const auto r = ppl(kv);
    EXPECT_EQ(r.code, 1) << kv << "\n" << r.out;
    EXPECT_NE(r.out.find("aquakv: error: "), std::string::npos) << kv << "\n" << r.out;
    EXPECT_EQ(r.out.find("internal error"), std::string::npos) << r.out;
  }
}

}  // namespace
