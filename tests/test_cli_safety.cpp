// The aquakv tool against careless or hostile input (issue 15): each test is one reproducible
// finding, run the way a user runs it. Bad input gives one "aquakv: error:" line naming the
// file or flag and a non-zero status, before any work; outputs never replace special files or
// follow planted symlinks; reads are bounded. Tests that need the model (a real evaluation or
// the model's dimensions) skip without AQUAKV_MODEL; the others need none, because the checks
// they exercise come before the model loads (a regression would fail them on the message).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli_runner.h"

namespace {

namespace fs = std::filesystem;
using aquakv::testing::CliResult;

class CliSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("aquakv_cli_safety_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const char* m = std::getenv("AQUAKV_MODEL");
    model_ = m != nullptr && *m != '\0' ? m : "";
    // A model path for commands that must fail before loading it: the real one when known.
    mflag_ = "-m " + (model_.empty() ? std::string("/nonexistent/model.gguf") : model_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string file(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }
  // A text of a few hundred tokens (enough for one 128-token window).
  std::string text() const {
    std::string t;
    for (int i = 0; i < 40; ++i) t += "The quick brown fox jumps over the lazy dog near the river bank. ";
    return file("text.txt", t);
  }
  static CliResult run(const std::string& args) { return aquakv::testing::run_cli(args); }
  void need_model() const {
    if (model_.empty()) GTEST_SKIP() << "AQUAKV_MODEL not set";
  }
  fs::path dir_;
  std::string model_, mflag_;
};

#define EXPECT_HAS(s, sub) EXPECT_NE((s).find(sub), std::string::npos) << (s)
#define EXPECT_LACKS(s, sub) EXPECT_EQ((s).find(sub), std::string::npos) << (s)

int count_lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

bool is_fifo(const std::string& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
}

// Finding 1: an output path that is a device node or FIFO is refused and left as it is.
TEST_F(CliSafety, F1_SpecialFileOutputsAreNotReplaced) {
  const std::string fifo = path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string t = text();
  CliResult r = run("perplexity " + mflag_ + " -f " + t + " -c 128 --chunks 1 --json " + fifo);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: --json " + fifo + ": is a FIFO; refusing to replace it");
  EXPECT_TRUE(is_fifo(fifo));
  r = run("calibrate " + mflag_ + " -o " + fifo);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "-o " + fifo + ": is a FIFO; refusing to replace it");
  EXPECT_TRUE(is_fifo(fifo));
  // A device node made here, never a system one: a broken build must not be able to replace
  // the machine's /dev/null (creating one needs root; without it the FIFO cases stand in).
  const std::string dev = path("null");
  if (mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    r = run("perplexity " + mflag_ + " -f " + t + " -c 128 --chunks 1 --save-logits " + dev);
    EXPECT_EQ(r.code, 1);
    EXPECT_HAS(r.out, "--save-logits " + dev + ": is a character device; refusing to replace it");
    struct stat st {};
    EXPECT_TRUE(lstat(dev.c_str(), &st) == 0 && S_ISCHR(st.st_mode));
  }
  r = run("grid generate -d 1 -n 4 --iterations 1 --samples 64 --final-samples 0 -o " + fifo);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "is a FIFO");
  EXPECT_TRUE(is_fifo(fifo));
}

// Finding 2: a symlink planted at the old fixed temporary name PATH.tmp is not followed.
TEST_F(CliSafety, F2_PlantedTmpSymlinkIsNotFollowed) {
  const std::string victim = file("victim", "precious");
  const std::string out = path("g.n4xd1.f32le");
  fs::create_symlink(victim, out + ".tmp");
  const CliResult r =
      run("grid generate -d 1 -n 4 --iterations 2 --samples 256 --final-samples 0 -q -o " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(victim);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), "precious");
  EXPECT_FALSE(fs::is_symlink(out));
  EXPECT_EQ(fs::file_size(out), 16u);
}

TEST_F(CliSafety, F2_SaveLogitsThroughPlantedSymlink) {
  need_model();
  const std::string victim = file("victim", "precious");
  const std::string out = path("base.logits");
  fs::create_symlink(victim, out + ".tmp");
  const CliResult r = run("perplexity " + mflag_ + " -f " + text() +
                          " -c 128 --chunks 1 --logits-top 8 -t 2 --save-logits " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream f(victim);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), "precious");
  EXPECT_FALSE(fs::is_symlink(out));
  EXPECT_GT(fs::file_size(out), 100u);
}

// Finding 3: endless inputs stop at the cap, quickly, with the flag that raises it.
TEST_F(CliSafety, F3_UnboundedReadsStopAtTheCap) {
  for (const std::string& cmd : std::vector<std::string>{"tokenize " + mflag_ + " -f /dev/zero",
                                "perplexity " + mflag_ + " -f /dev/zero",
                                "generate " + mflag_ + " -f /dev/zero -n 1"}) {
    const auto t0 = std::chrono::steady_clock::now();
    const CliResult r = run("--max-text-mb 8 " + cmd);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(r.code, 1) << cmd << "\n" << r.out;
    EXPECT_HAS(r.out, "-f /dev/zero: larger than the 8 MiB limit for this input (raise it with --max-text-mb)");
    EXPECT_EQ(count_lines(r.out), 1) << r.out;
    EXPECT_LT(s, 20.0) << cmd;
  }
  // The flag also works after the subcommand; a bad value is a usage error.
  EXPECT_EQ(run("tokenize " + mflag_ + " -f /dev/zero --max-text-mb 1").code, 1);
  EXPECT_EQ(run("--max-text-mb 0 tokenize " + mflag_ + " -p x").code, 2);
}

// Finding 4: passkey --step 0 looped forever, --step -1 wrapped around.
TEST_F(CliSafety, F4_PasskeyStepMustBePositive) {
  for (const char* step : {"0", "-1"}) {
    const CliResult r = run("passkey " + mflag_ + " --trials 1 --depths 0.5 -c 128 --step " + step);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_HAS(r.out, std::string("aquakv: error: --step ") + step + ": must be >= 1");
  }
}

// Finding 5: directories where files are expected give an error naming the path (was an
// "internal error: basic_filebuf::underflow" with exit 3, or "the prompt is empty").
TEST_F(CliSafety, F5_DirectoriesAreNamed) {
  const std::string d = dir_.string();
  const std::string t = text();
  CliResult r = run("perplexity " + mflag_ + " -f " + d);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: -f " + d + ": is a directory, expected a regular file");
  r = run("perplexity " + mflag_ + " -f " + t + " --kl-base " + d);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: logits file " + d + ": is a directory");
  r = run("generate " + mflag_ + " -f " + d);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: -f " + d + ": is a directory");
  r = run("tokenize " + mflag_ + " -f " + d);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "-f " + d + ": is a directory");
}

TEST_F(CliSafety, F5_AdapterDirectoryIsNamed) {
  need_model();
  const std::string d = dir_.string();
  const CliResult r = run("perplexity " + mflag_ + " -f " + text() + " -c 128 --chunks 1 --kv aquakv:" + d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "aquakv: error: adapters " + d + ": is a directory");
  EXPECT_LACKS(r.out, "internal error");
}

// Finding 6: output paths and option values are checked before the work, not after it.
TEST_F(CliSafety, F6_OutputsCheckedBeforeWork) {
  const std::string missing = path("missing/x.aqkv");
  const auto t0 = std::chrono::steady_clock::now();
  CliResult r = run("calibrate " + mflag_ + " -o " + missing);
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: -o " + missing + ": directory " + path("missing") + " does not exist");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  r = run("calibrate " + mflag_ + " -o " + path("a.aqkv") + " --json " + path("missing/r.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "--json " + path("missing/r.json") + ": directory");
  const std::string t = text();
  for (const char* flag : {"--save-logits", "--json"}) {
    r = run("perplexity " + mflag_ + " -f " + t + " -c 128 --chunks 1 " + flag + " " + path("missing/o"));
    EXPECT_EQ(r.code, 1);
    EXPECT_HAS(r.out, std::string("aquakv: error: ") + flag + " " + path("missing/o") + ": directory");
    EXPECT_LACKS(r.out, "Final estimate");  // no evaluation ran
  }
  r = run("passkey " + mflag_ + " --trials 1 -c 128 --json " + path("missing/p.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "--json " + path("missing/p.json") + ": directory");
  r = run("grid generate -d 1 -n 4 -o " + path("missing/g.n4xd1.f32le"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "does not exist");
}

TEST_F(CliSafety, F6_RankCheckedBeforeCapture) {
  need_model();
  const auto t0 = std::chrono::steady_clock::now();
  const CliResult r = run("calibrate " + mflag_ + " -q --rank 100000 -o " + path("a.aqkv"));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --rank 100000 outside [0, ");
  EXPECT_LT(s, 20.0);  // the capture alone takes minutes at the defaults
  EXPECT_FALSE(fs::exists(path("a.aqkv")));
}

// The per-stream ranks too (lo = -1 means "as --rank" internally, never a user value).
TEST_F(CliSafety, PerStreamRanksCheckedBeforeCapture) {
  need_model();
  CliResult r = run("calibrate " + mflag_ + " -q --value-rank 193 --predictor-inputs wide-keys -o " + path("a.aqkv"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --value-rank 193 outside [0, 192]");
  r = run("calibrate " + mflag_ + " -q --key-rank -1 -o " + path("a.aqkv"));
  EXPECT_NE(r.code, 0);
  r = run("calibrate " + mflag_ + " -q --method lorc --key-rank 4 -o " + path("a.aqkv"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "--key-rank and --value-rank apply to --method aquakv");
  EXPECT_FALSE(fs::exists(path("a.aqkv")));
}

// KVQuant / CQ settings that depend on the model fail before the capture too; nothing is written.
TEST_F(CliSafety, QuantTablesSettingsCheckedBeforeCapture) {
  need_model();
  const auto t0 = std::chrono::steady_clock::now();
  CliResult r = run("calibrate " + mflag_ + " -q --method cq --channels 5 -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate --method cq: --channels 5 must divide the model's KV width");
  r = run("calibrate " + mflag_ + " -q --method kvquant --bits 9 -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "--bits must be in [1, 8], got 9");
  // Fisher weights need text (the gradients are of its loss) and a tables method.
  r = run("calibrate " + mflag_ + " -q --method kvquant --fisher -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --fisher needs calibration text (-f)");
  r = run("calibrate " + mflag_ + " -q --fisher -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --fisher applies to --method kvquant or cq");
  r = run("calibrate " + mflag_ + " -q --method cq --fisher-windows 3 -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --fisher-windows needs --fisher");
  // The uniform datatype is KVQuant's ablation: no other method, nothing for Fisher weights to weigh.
  r = run("calibrate " + mflag_ + " -q --datatype uniform -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "aquakv: error: calibrate: --datatype applies to --method kvquant");
  r = run("calibrate " + mflag_ + " -q --method kvquant --datatype uniform --fisher -f " + mflag_.substr(3) + " -o " + path("a.qt"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.out, "--datatype uniform has no k-means to weigh (--fisher)");
  r = run("calibrate " + mflag_ + " -q --method kvquant --datatype nuq -o " + path("a.qt"));
  EXPECT_EQ(r.code, 2);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 30.0);  // the capture alone takes minutes at the defaults
  r = run("calibrate " + mflag_ + " -q --method bogus -o " + path("a.qt"));
  EXPECT_EQ(r.code, 2);
  EXPECT_FALSE(fs::exists(path("a.qt")));
}

// Finding 7: bad values are refused instead of accepted with exit 0.
TEST_F(CliSafety, F7_BadValuesAreRefused) {
  const std::string t = text();
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"perplexity " + mflag_ + " -f " + t + " -t -100", 2, "-t"},
      {"passkey " + mflag_ + " -t -100", 2, "-t"},
      {"generate " + mflag_ + " --top-k -5", 1, "--top-k: expected >= 0"},
      {"generate " + mflag_ + " -s 99999999999999999999999", 2, "out of the 64-bit range"},
      {"calibrate " + mflag_ + " -o " + path("a") + " -s 18446744073709551616", 2, "out of the 64-bit range"},
      {"calibrate " + mflag_ + " -o " + path("a") + " -s -1", 2, "is not a decimal integer >= 0"},
      {"perplexity " + mflag_ + " -f " + t + " -c 0128", 2, "--ctx"},  // strtoll read it as octal
      {"generate " + mflag_ + " -s 010", 2, "'010' is not a decimal integer"},
      {"perplexity " + mflag_ + " -f " + t + " --save-logits ''", 1, "--save-logits: empty file name"},
      {"perplexity " + mflag_ + " -f " + t + " --json ''", 1, "--json: empty file name"},
      {"generate " + mflag_ + " -p ''", 1, "-p: the prompt is empty"},
      {"generate " + mflag_ + " -f " + file("empty.txt", ""), 1, "the prompt file is empty"},
  };
  for (const Case& c : cases) {
    const CliResult r = run(c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.out;
    EXPECT_HAS(r.out, c.message);
  }
}

TEST_F(CliSafety, F7_StdoutWriteErrorsFail) {
  // Standard output to /dev/full, standard error to a file (run_cli would merge them).
  const std::string spm = std::string(AQUAKV_TEST_DATA) + "/tokenizer/spm_vocab.gguf";
  const std::string err = path("stderr.txt");
  const int st = std::system((std::string(AQUAKV_CLI) + " tokenize -m " + spm +
                              " -p 'Hello world' >/dev/full 2>" + err).c_str());
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 1);
  std::ifstream f(err);
  const std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(out, "aquakv: error: cannot write standard output: No space left on device\n");
}

TEST_F(CliSafety, F7_GenerateStopsOnAFullDisk) {
  need_model();
  const std::string err = path("stderr.txt");
  const int st = std::system((std::string(AQUAKV_CLI) + " generate " + mflag_ +
                              " -p 'Once upon a time' -n 64 --temp 0 -t 2 >/dev/full 2>" + err).c_str());
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 1);
  std::ifstream f(err);
  const std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_HAS(out, "aquakv: error: cannot write");
}

TEST_F(CliSafety, F7_BenchDepthBeyondTheModel) {
  need_model();
  const auto t0 = std::chrono::steady_clock::now();
  const CliResult r = run("bench " + mflag_ + " -d 99999999 -r 1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "aquakv: error: -d/-p/-n: the deepest test needs depth 99999999");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
  EXPECT_EQ(run("bench " + mflag_ + " -d 9999999999999999999 -r 1").code, 1);
}

// Finding 8: every command refuses invalid UTF-8 like tokenize does; a NUL is echoed whole.
TEST_F(CliSafety, F8_InvalidUtf8RefusedEverywhere) {
  const std::string bad = file("bad.txt", "ok\n\xC3(x");
  for (const std::string& cmd : std::vector<std::string>{"tokenize " + mflag_ + " -f " + bad, "perplexity " + mflag_ + " -f " + bad,
                                "generate " + mflag_ + " -f " + bad,
                                "calibrate " + mflag_ + " -o " + path("a.aqkv") + " -f " + bad}) {
    const CliResult r = run(cmd);
    EXPECT_EQ(r.code, 1) << cmd << "\n" << r.out;
    EXPECT_HAS(r.out, bad + ": invalid UTF-8 at byte 3 (0xC3)");
  }
}

TEST_F(CliSafety, F8_PromptWithNulIsEchoedWhole) {
  need_model();
  const std::string p = file("nul.txt", std::string("before\0after", 12));
  const CliResult r = run("generate " + mflag_ + " -f " + p + " -n 1 --temp 0 -t 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, std::string("before\0after", 12));
}

// Finding 10: messages that say what is wrong.
TEST_F(CliSafety, F10_ClearMessages) {
  CliResult r = run("frobnicate");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.out, "aquakv: unknown subcommand 'frobnicate' (expected one of: ");
  r = run("--max-text-mb 4 frobnicate");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.out, "unknown subcommand 'frobnicate'");
}

TEST_F(CliSafety, F10_GridDirectoryIsNamed) {
  need_model();
  const std::string d = dir_.string();
  const CliResult r = run("perplexity " + mflag_ + " -f " + text() + " -c 128 --chunks 1 --kv higgs:2x16:grid=" + d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "grid file " + d + ": is a directory");
  EXPECT_LACKS(r.out, "9223372036854775807");
}

}  // namespace
