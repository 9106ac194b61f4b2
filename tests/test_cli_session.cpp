// Prompt caches as a user runs them (`aquakv generate --prompt-cache`, `aquakv session
// inspect`): the first run processes and saves, the second restores and gives the same greedy
// answer; a longer prompt reuses the shared prefix; a file stored in another format is moved
// into the in-memory one; --prompt-cache-ro never writes, --prompt-cache-all keeps the answer;
// damaged files and misused flags give one line and a non-zero exit.
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
using Result = aquakv::testing::CliResult;

// The generated text: the output without the tool's own lines (prompt-cache notes, timings).
std::string text_of(const std::string& out) {
  std::string t = out.substr(0, out.find("\nprefill:"));
  return std::regex_replace(t, std::regex("aquakv: prompt cache [^\n]*\n"), "");
}

long long number_after(const std::string& out, const std::string& before) {
  const size_t at = out.find(before);
  return at == std::string::npos ? -1 : std::atoll(out.c_str() + at + before.size());
}

class CliSession : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = m;
    dir_ = (fs::temp_directory_path() / ("aqkv_cli_sess_" + std::to_string(getpid()))).string();
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/doc.txt") << doc();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  static std::string doc() {
    std::string d;
    for (int i = 0; i < 12; ++i)
      d += "The harbour town kept its records in a stone archive by the water. Ledger " + std::to_string(i) +
           " lists the ships that arrived that year, their cargo of salt, timber and wool, and the names of "
           "the captains who paid the harbour fee. ";
    return d;
  }
  Result gen(const std::string& args) {
    return aquakv::testing::run_cli("generate -m " + model_ + " -t 2 -n 12 --temp 0 -c 1024 " + args);
  }
  std::string model_, dir_;
};

TEST_F(CliSession, SecondRunRestoresAndAnswersTheSame) {
  for (const std::string kv : {"fp16", "q4_0", "higgs2"}) {
    SCOPED_TRACE(kv);
    const std::string f = dir_ + "/" + kv + ".aqss";
    const Result a = gen("-f " + dir_ + "/doc.txt --kv " + kv + " --prompt-cache " + f);
    ASSERT_EQ(a.code, 0) << a.out;
    EXPECT_NE(a.out.find("prompt cache " + f + ": none yet"), std::string::npos) << a.out;
    const long long saved = number_after(a.out, ": saved ");
    EXPECT_GT(saved, 300) << a.out;
    const Result b = gen("-f " + dir_ + "/doc.txt --kv " + kv + " --prompt-cache " + f);
    ASSERT_EQ(b.code, 0) << b.out;
    EXPECT_EQ(number_after(b.out, ": reused "), saved) << b.out;
    EXPECT_NE(b.out.find("prefill: 0 tokens"), std::string::npos) << b.out;
    EXPECT_EQ(b.out.find(": saved "), std::string::npos) << b.out;  // nothing new to save
    EXPECT_EQ(text_of(b.out), text_of(a.out));
    const Result i = aquakv::testing::run_cli("session inspect " + f);
    ASSERT_EQ(i.code, 0) << i.out;
    EXPECT_NE(i.out.find("tokens         " + std::to_string(saved)), std::string::npos) << i.out;
    EXPECT_NE(i.out.find("format         " + kv), std::string::npos) << i.out;
  }
}

TEST_F(CliSession, LongerPromptReusesThePrefixAndOtherFormatsMoveIn) {
  const std::string f = dir_ + "/p.aqss";
  const Result a = gen("-f " + dir_ + "/doc.txt --kv fp16 --cache-file-kv higgs2 --prompt-cache " + f);
  ASSERT_EQ(a.code, 0) << a.out;
  const long long saved = number_after(a.out, ": saved ");
  const Result i = aquakv::testing::run_cli("session inspect " + f);
  EXPECT_NE(i.out.find("format         higgs2"), std::string::npos) << i.out;
  // A longer prompt: the document plus a question, in the in-memory fp16 format.
  std::ofstream(dir_ + "/q.txt") << doc() << "Question: what did the ships carry?";
  const Result b = gen("-f " + dir_ + "/q.txt --kv fp16 --prompt-cache " + f + " --prompt-cache-ro");
  ASSERT_EQ(b.code, 0) << b.out;
  const long long reused = number_after(b.out, ": reused ");
  EXPECT_GE(reused, saved - 2) << b.out;  // the boundary token may merge with the question
  EXPECT_LE(reused, saved);
  EXPECT_NE(b.out.find("moved into fp16"), std::string::npos) << b.out;
  EXPECT_EQ(b.out.find(": saved "), std::string::npos) << b.out;  // read-only
  EXPECT_EQ(number_after(aquakv::testing::run_cli("session inspect " + f).out, "tokens         "), saved);
  // --prompt-cache-all keeps the answer too.
  const Result c = gen("-f " + dir_ + "/q.txt --kv q8_0 --prompt-cache " + f + " --prompt-cache-all");
  ASSERT_EQ(c.code, 0) << c.out;
  const long long total = number_after(c.out, ": saved ");
  // The whole prompt (the part reused and the part computed) and the generated tokens that were
  // processed: all of them when generation runs to -n, all but the last when it stops at an end
  // token (sampled, counted in "decode:", never fed back). Which of the two happens depends on
  // the text the machine's arithmetic produces (it differed between AVX2 and AVX-512 hosts).
  const long long decoded = number_after(c.out, "decode: ");
  ASSERT_GT(decoded, 0) << c.out;
  EXPECT_GE(number_after(c.out, ": reused "), reused - 2) << c.out;
  const long long fed = number_after(c.out, "prefill: ") + number_after(c.out, ": reused ") + decoded;
  EXPECT_TRUE(total == fed || total == fed - 1) << "saved " << total << ", prompt + generated " << fed << "\n" << c.out;
  // The saved count is what the cache held at the end (the timing line's "live (N tokens)").
  EXPECT_NE(c.out.find("(" + std::to_string(total) + " tokens)"), std::string::npos) << c.out;
  EXPECT_NE(aquakv::testing::run_cli("session inspect " + f).out.find("format         q8_0"), std::string::npos);
}

TEST_F(CliSession, BadFilesAndFlagsAreOneLine) {
  const std::string f = dir_ + "/bad.aqss";
  ASSERT_EQ(gen("-f " + dir_ + "/doc.txt --prompt-cache " + f).code, 0);
  std::string bytes;
  {
    std::ifstream in(f, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  bytes[bytes.size() / 2] ^= 0x40;
  std::ofstream(f, std::ios::binary) << bytes;
  struct Case { std::string args, needle; };
  const Case cases[] = {
      {"generate -m " + model_ + " -p hi --prompt-cache " + f, "checksum mismatch"},
      {"session inspect " + f, "checksum mismatch"},
      {"session inspect " + dir_ + "/doc.txt", "not an aquakv session file"},
      {"session inspect " + dir_, "directory"},
      {"generate -m " + model_ + " -p hi --prompt-cache-ro", "--prompt-cache FILE"},
      {"generate -m " + model_ + " -p hi --prompt-cache " + dir_ + "/x --prompt-cache-ro --prompt-cache-all", "contradict"},
      {"generate -m " + model_ + " -p hi --prompt-cache " + dir_ + "/none/x", "--prompt-cache"},
      {"generate -m " + model_ + " -p hi --prompt-cache " + dir_ + "/x --cache-file-kv nope", "nope"},
  };
  for (const Case& c : cases) {
    const Result r = aquakv::testing::run_cli(c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_LE(std::count(r.out.begin(), r.out.end(), '\n'), 1) << c.args << "\n" << r.out;
  }
  EXPECT_FALSE(fs::exists(dir_ + "/x"));
}

}  // namespace
