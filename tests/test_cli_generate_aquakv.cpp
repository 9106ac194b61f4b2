// `aquakv generate --kv aquakv` (no adapter file) and `--compare`, as a user runs them, with a
// temporary per-user cache ($AQUAKV_CACHE) and a tiny first-run calibration (--calib-tokens 128
// --calib-window 32) so each test takes seconds: the first run calibrates (one notice line) and
// writes the adapter file, the second reuses it (no notice, same output); a damaged cached file
// is a one-line error naming it; --compare prints both outputs and the table.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"

namespace {

namespace fs = std::filesystem;
using Result = aquakv::testing::CliResult;

constexpr const char* kTiny = " --calib-tokens 128 --calib-window 32";

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

class CliAquakv : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = m;
    dir_ = fs::temp_directory_path() / ("aquakv_cli_aquakv_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    setenv("AQUAKV_CACHE", dir_.c_str(), 1);  // the aquakv child processes inherit it
  }
  void TearDown() override {
    unsetenv("AQUAKV_CACHE");
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  Result gen(const std::string& args) const {
    return aquakv::testing::run_cli("generate -m " + model_ + " -t 2 " + args + kTiny);
  }
  std::vector<fs::path> adapter_files() const {
    std::vector<fs::path> v;
    if (fs::exists(dir_ / "adapters"))
      for (const auto& e : fs::directory_iterator(dir_ / "adapters")) v.push_back(e.path());
    return v;
  }
  std::string model_;
  fs::path dir_;
};

// The generated text: what precedes the timing line.
std::string text_of(const std::string& out) {
  const size_t at = out.find("\nprefill:");
  return at == std::string::npos ? out : out.substr(0, at);
}

TEST_F(CliAquakv, FirstRunCalibratesSecondRunReuses) {
  const std::string args = "-p 'The capital of France is' -n 6 --temp 0 --kv aquakv";
  const Result a = gen(args);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_NE(a.out.find("aquakv: no AQUA-KV adapters for this model yet: calibrating once on 128 tokens"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("aquakv: calibrated in "), std::string::npos) << a.out;
  const auto files = adapter_files();
  ASSERT_EQ(files.size(), 1u) << a.out;
  const std::string name = files[0].filename().string();
  EXPECT_EQ(name.rfind("SmolLM2-135M-Instruct.Q4_1-", 0), 0u) << name;
  EXPECT_NE(name.find("-higgs.2x16.g192-higgs.2x16.g192-higgs.2x256.g192-self128w32s1.aqkv"), std::string::npos) << name;
  EXPECT_NE(a.out.find("KV cache aquakv:" + files[0].string() + ",p=4,b=128:"), std::string::npos) << a.out;
  const std::string bytes = slurp(files[0]);

  const Result b = gen(args);
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(b.out.find("calibrat"), std::string::npos) << b.out;
  EXPECT_EQ(adapter_files().size(), 1u);
  EXPECT_TRUE(slurp(files[0]) == bytes) << "the cached file was rewritten";
  // Greedy on the same adapters: the same text (the first run's text follows its notice lines).
  const std::string ta = text_of(a.out), tb = text_of(b.out);
  EXPECT_EQ(ta.substr(ta.find("The capital of France is")), tb) << a.out << "\n---\n" << b.out;
}

TEST_F(CliAquakv, DamagedCachedFileIsAOneLineError) {
  ASSERT_EQ(gen("-p hi -n 1 --temp 0 --kv aquakv").code, 0);
  const auto files = adapter_files();
  ASSERT_EQ(files.size(), 1u);
  std::string bytes = slurp(files[0]);
  bytes[bytes.size() / 2] = char(bytes[bytes.size() / 2] ^ 0x40);
  std::ofstream(files[0], std::ios::binary | std::ios::trunc) << bytes;
  const Result r = gen("-p hi -n 1 --temp 0 --kv aquakv");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("checksum mismatch"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(cached adapters: delete " + files[0].string() + " to recalibrate)"), std::string::npos) << r.out;
  EXPECT_TRUE(slurp(files[0]) == bytes) << "a damaged cached file must not be replaced silently";
  // Deleting it recalibrates.
  fs::remove(files[0]);
  const Result again = gen("-p hi -n 1 --temp 0 --kv aquakv");
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("calibrating once"), std::string::npos) << again.out;
}

// One row of the comparison table: label, bits/value, live KV bytes, prefill t/s, decode t/s,
// generated, agree (as text).
struct Row {
  std::string label, agree;
  double bits = -1, prefill = -1, decode = -1;
  long long live = -1, generated = -1;
};

Row row(const std::string& out, const std::string& label) {
  Row r;
  const size_t header = out.find("\ncache ");
  if (header == std::string::npos) return r;
  const size_t at = out.find("\n" + label + " ", header + 1);
  if (at == std::string::npos) return r;
  std::istringstream line(out.substr(at + 1, out.find('\n', at + 1) - at - 1));
  std::string live;
  line >> r.label >> r.bits >> live >> r.prefill >> r.decode >> r.generated >> r.agree;
  live.erase(std::remove(live.begin(), live.end(), ','), live.end());
  r.live = live.empty() ? -1 : std::stoll(live);
  return r;
}

TEST_F(CliAquakv, CompareRunsBothCachesAndPrintsTheTable) {
  // 169 prompt tokens: the AQUA-KV cache compresses a chunk (p = 4, b = 128), so its bits per
  // value and live bytes are below fp16's.
  std::string prompt;
  for (int i = 0; i < 24; ++i) prompt += "The cat sat on the mat. ";
  const Result r = gen("-p '" + prompt + "' -n 8 --temp 0 --kv aquakv --compare");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t a = r.out.find("--- fp16 ---\n" + prompt);
  const size_t b = r.out.find("--- aquakv ---\n" + prompt);
  ASSERT_NE(a, std::string::npos) << r.out;
  ASSERT_NE(b, std::string::npos) << r.out;
  EXPECT_LT(a, b);
  EXPECT_NE(r.out.find("same prompt (169 tokens) and sampling (greedy) for both"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cache   bits/value  live KV bytes  prefill t/s  decode t/s  generated  agree"), std::string::npos) << r.out;
  const Row f = row(r.out, "fp16"), q = row(r.out, "aquakv");
  EXPECT_DOUBLE_EQ(f.bits, 16.0) << r.out;
  EXPECT_EQ(f.agree, "-");
  EXPECT_EQ(f.generated, 8) << r.out;
  EXPECT_EQ(q.generated, 8) << r.out;
  // 177 cached tokens (each generated token is evaluated): 30 layers * 2 * 192 values * 2 bytes.
  EXPECT_EQ(f.live, 177LL * 30 * 2 * 192 * 2) << r.out;
  EXPECT_GT(q.bits, 2.0) << r.out;
  EXPECT_LT(q.bits, 12.0) << r.out;
  EXPECT_LT(q.live, f.live / 2) << r.out;
  EXPECT_GT(f.prefill, 0);
  EXPECT_GT(q.decode, 0);
  const long long agree = std::stoll(q.agree.empty() ? "-1" : q.agree);
  EXPECT_GE(agree, 0) << r.out;
  EXPECT_LE(agree, 8) << r.out;
  EXPECT_NE(r.out.find("aquakv: aquakv:" + (dir_ / "adapters").string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bytes of predictors, per model, not per token)"), std::string::npos) << r.out;
}

// With sampling (same seed), a cache against itself agrees on every token; the fp16 run of
// --compare prints what plain `generate --kv fp16` prints.
TEST_F(CliAquakv, CompareUsesTheSameSamplingForBoth) {
  const std::string p = "-p 'Once upon a time' -n 12 --temp 0.9 --seed 11";
  const Result r = gen(p + " --kv fp16 --compare fp16");
  ASSERT_EQ(r.code, 0) << r.out;
  const Row q = row(r.out, "fp16");
  EXPECT_EQ(q.generated, 12) << r.out;
  EXPECT_NE(r.out.find("same prompt (4 tokens) and sampling (temperature 0.9, seed 11)"), std::string::npos) << r.out;
  const size_t first = r.out.find("--- fp16 ---\n"), second = r.out.find("--- fp16 ---\n", first + 1);
  ASSERT_NE(second, std::string::npos) << r.out;
  const std::string t1 = r.out.substr(first + 13, second - first - 13);
  const std::string t2 = r.out.substr(second + 13, r.out.find("\nsame prompt") - second - 13);
  EXPECT_EQ(t1, t2);
  // The second fp16 row (the compared one) agrees on all 12 tokens.
  const size_t row2 = r.out.rfind("\nfp16 ");
  EXPECT_NE(r.out.substr(row2, r.out.find('\n', row2 + 1) - row2).find(" 12     12"), std::string::npos) << r.out;
  const Result plain = gen(p + " --kv fp16");
  ASSERT_EQ(plain.code, 0) << plain.out;
  EXPECT_EQ(text_of(plain.out), t1) << plain.out << "\n---\n" << r.out;
}

// Bad options of a plain aquakv spec are refused before the first-run calibration starts.
TEST_F(CliAquakv, BadOptionsFailBeforeCalibrating) {
  for (const std::string bad : {"aquakv,p=x", "aquakv,k=higgs3", "aquakv,q=1"}) {
    const Result r = gen("-p hi -n 1 --kv " + bad);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_EQ(lines(r.out), 1) << r.out;
    EXPECT_EQ(r.out.find("calibrating"), std::string::npos) << r.out;
    EXPECT_TRUE(adapter_files().empty()) << r.out;
  }
}

TEST_F(CliAquakv, BadCompareSpecIsOneLine) {
  const Result r = gen("-p hi -n 1 --compare nonsense");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("nonsense"), std::string::npos) << r.out;
}

}  // namespace
