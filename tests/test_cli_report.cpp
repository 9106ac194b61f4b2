// `aquakv report` with llama.cpp rows: the speed rows bench/llama_cpp_bench.py writes are read
// with --extra, land in report.md's speed table and in the speed chart's data next to aquakv's
// own rows, and a row with a bad field is refused with a one-line error naming file, line and
// field. tests/data/llama_cpp_speed_rows.jsonl was written by
//   ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_bench.py --speed-ctx 64,128
//       --decode-tokens 4 -t 2 --rows tests/data/llama_cpp_speed_rows.jsonl  (one command line)
// (llama-cpp-python 0.3.36, default model, loaded machine: the rates are only sample values).
// None of these tests needs llama.cpp; the last one needs AQUAKV_MODEL.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli_runner.h"

namespace {

using aquakv::testing::run_cli;

const std::string kRows = std::string(AQUAKV_TEST_DATA) + "/llama_cpp_speed_rows.jsonl";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

std::string fresh_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/aquakv_cli_report_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// The speed-table line prefix of a row: impl, kv, ctx, threads.
std::string speed_line(const std::string& impl, const std::string& kv, int ctx, int threads) {
  return "| " + impl + " | " + kv + " | " + std::to_string(ctx) + " | " + std::to_string(threads) + " | ";
}

TEST(CliReport, LlamaCppSpeedRowsNeedNoModel) {
  const std::string dir = fresh_dir("extra_only");
  const auto r = run_cli("report --extra " + kRows + " -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string md = slurp(dir + "/report.md");
  const size_t speed = md.find("## Speed");
  ASSERT_NE(speed, std::string::npos) << md;
  for (const char* kv : {"f16", "q8_0", "q4_0"})
    for (int ctx : {64, 128})
      EXPECT_NE(md.find(speed_line("llama.cpp", kv, ctx, 2), speed), std::string::npos)
          << kv << " " << ctx << "\n" << md;
  EXPECT_NE(md.find("- model: SmolLM2-135M-Instruct.Q4_1.gguf"), std::string::npos) << md;
  // The chart data: one series per (impl, kv), contexts in order.
  const std::string dat = slurp(dir + "/speed.dat");
  EXPECT_NE(dat.find("# llama.cpp q4_0\n64 "), std::string::npos) << dat;
  EXPECT_NE(dat.find("\n128 "), std::string::npos) << dat;
  EXPECT_TRUE(std::filesystem::exists(dir + "/speed.png"));
  // rows.jsonl keeps the rows (aquakv's reader and the script's writer agree on every field).
  EXPECT_EQ(lines(slurp(dir + "/rows.jsonl")), 6);
  std::filesystem::remove_all(dir);
}

TEST(CliReport, RefusesARowWithABadField) {
  const std::string dir = fresh_dir("bad");
  std::filesystem::create_directories(dir);
  std::string text = slurp(kRows);
  const size_t second = text.find('\n') + 1;
  std::string bad = text.substr(second, text.find('\n', second) - second + 1);
  const std::string field = "\"decode_tps\": ";
  const size_t at = bad.find(field);
  ASSERT_NE(at, std::string::npos) << bad;
  bad.insert(at + field.size(), "\"fast\", \"was\": ");  // decode_tps becomes a string
  std::ofstream(dir + "/rows.jsonl") << text.substr(0, second) << bad;
  const auto r = run_cli("report --extra " + dir + "/rows.jsonl -o " + dir + "/out");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("rows.jsonl:2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode_tps"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out/report.md"));
  std::filesystem::remove_all(dir);
}

TEST(CliReport, NothingToDoIsAnError) {
  const auto r = run_cli("report -o " + fresh_dir("nothing"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("nothing to do"), std::string::npos) << r.out;
}

// bench/report_speed.json with tiny overrides: aquakv's speed rows and llama.cpp's side by side.
TEST(CliReport, AquakvAndLlamaCppRowsSideBySide) {
  const char* m = std::getenv("AQUAKV_MODEL");
  if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
  const std::string dir = fresh_dir("side_by_side");
  const std::string config = std::string(AQUAKV_TEST_DATA) + "/../../bench/report_speed.json";
  const auto r = run_cli("report --config " + config + " --speed-ctx 64 --decode-tokens 4 --extra " +
                         kRows + " -o " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string md = slurp(dir + "/report.md");
  for (const char* kv : {"fp16", "q8_0", "q4_0"})
    EXPECT_NE(md.find(speed_line("aquakv", kv, 64, 2)), std::string::npos) << kv << "\n" << md;
  for (const char* kv : {"f16", "q8_0", "q4_0"})
    EXPECT_NE(md.find(speed_line("llama.cpp", kv, 64, 2)), std::string::npos) << kv << "\n" << md;
  const std::string dat = slurp(dir + "/speed.dat");
  EXPECT_NE(dat.find("# aquakv q4_0\n64 "), std::string::npos) << dat;
  EXPECT_NE(dat.find("# llama.cpp q4_0\n64 "), std::string::npos) << dat;
  const std::string gp = slurp(dir + "/speed.gp");
  EXPECT_NE(gp.find("dt 2 title 'llama.cpp q4_0'"), std::string::npos) << gp;
  EXPECT_NE(gp.find("dt 1 title 'aquakv q4_0'"), std::string::npos) << gp;
  std::filesystem::remove_all(dir);
}

}  // namespace
