// Tests of `aquakv tokenize` as a user runs it: output format, and the defined behaviour for
// unreadable files, malformed UTF-8 and bad usage (one-line error, exit 1 for errors and 2 for
// usage). Uses the committed SentencePiece test vocabulary, and the default model when
// AQUAKV_MODEL is set.
#include <gtest/gtest.h>

#include "cli_runner.h"
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

const std::string kSpm = std::string(AQUAKV_TEST_DATA) + "/tokenizer/spm_vocab.gguf";

using Result = aquakv::testing::CliResult;
Result run(const std::string& args) { return aquakv::testing::run_cli(args); }

std::string temp_file(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

TEST(CliTokenize, PrintsIdsAndPieces) {
  // SentencePiece vocabulary: BOS, then "▁Hello" pieces; --ids prints a list.
  const Result ids = run("tokenize -m " + kSpm + " -p 'Hello world' --ids");
  ASSERT_EQ(ids.code, 0) << ids.out;
  ASSERT_EQ(ids.out.substr(0, 4), "[1, ") << ids.out;
  EXPECT_EQ(ids.out.back(), '\n');
  const Result pieces = run("tokenize -m " + kSpm + " -p 'Hello world' --show-count");
  ASSERT_EQ(pieces.code, 0) << pieces.out;
  EXPECT_NE(pieces.out.find("     1 -> '<s>'\n"), std::string::npos) << pieces.out;
  EXPECT_NE(pieces.out.find("Total number of tokens: "), std::string::npos);
  const int n = std::count(ids.out.begin(), ids.out.end(), ',') + 1;
  EXPECT_EQ(lines(pieces.out), n + 1);
}

TEST(CliTokenize, DefaultModelMatchesLlamaCpp) {
  const char* m = std::getenv("AQUAKV_MODEL");
  if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
  // ids from llama-cpp-python (tokenize(..., add_bos=True, special=True)) for this model.
  const Result r = run(std::string("tokenize -m ") + m +
                       " -p 'Hello world! 12345 <|im_start|>user' --ids");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "[19556, 905, 17, 216, 33, 34, 35, 36, 37, 216, 1, 4093]\n");
  const Result f = run(std::string("tokenize -m ") + m + " -f " +
                       temp_file("hello.txt", "Hello world") + " --ids");
  EXPECT_EQ(f.out, "[19556, 905]\n");
}

TEST(CliTokenize, UnreadableFileIsAnError) {
  const Result r = run("tokenize -m " + kSpm + " -f /nonexistent/dir/x.txt");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out,
            "aquakv: error: -f /nonexistent/dir/x.txt: cannot open: No such file or directory\n");
  const Result d = run("tokenize -m " + kSpm + " -f " + ::testing::TempDir());
  EXPECT_EQ(d.code, 1) << d.out;
  EXPECT_NE(d.out.find(": is a directory, expected a regular file"), std::string::npos) << d.out;
  EXPECT_EQ(lines(d.out), 1) << d.out;
}

TEST(CliTokenize, MalformedUtf8IsAnError) {
  const std::string path = temp_file("bad.txt", "ok\n\xC3(x");
  const Result r = run("tokenize -m " + kSpm + " -f " + path);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "aquakv: error: -f " + path + ": invalid UTF-8 at byte 3 (0xC3)\n");
  const Result p = run("tokenize -m " + kSpm + " -p \"$(printf 'a\\377')\"");
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.out.find("-p: invalid UTF-8 at byte 1 (0xFF)"), std::string::npos) << p.out;
}

TEST(CliTokenize, BadUsageAndBadModel) {
  EXPECT_EQ(run("tokenize -m " + kSpm).code, 2);                  // no input
  EXPECT_EQ(run("tokenize -m " + kSpm + " -p a -f b").code, 2);   // two inputs
  EXPECT_EQ(run("tokenize -m " + kSpm + " -p a --bogus").code, 2);
  const Result m = run("tokenize -m " + temp_file("notgguf.bin", "hello, not a gguf") + " -p a");
  EXPECT_EQ(m.code, 1);
  EXPECT_EQ(lines(m.out), 1) << m.out;
}

}  // namespace
