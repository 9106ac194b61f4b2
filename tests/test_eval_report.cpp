// Tests of eval/report.h: row JSON round trip (and the llama.cpp script's rows), tables, charts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "aquakv/eval/report.h"
#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

ReportRow sample_row() {
  ReportRow r;
  r.model = "m.gguf";
  r.kv = "q4_0";
  r.bits_per_value = 4.5;
  r.ctx = 512;
  r.threads = 2;
  r.windows = 2;
  r.positions = 1022;
  r.ppl = 28.5;
  r.ppl_se = 3.0;
  r.ppl_ratio = 1.05;
  r.kl_mean = 0.05;
  r.kl_p99 = 0.38;
  r.same_top = 0.87;
  return r;
}

TEST(Report, RowJsonRoundTrip) {
  const ReportRow r = sample_row();
  const ReportRow s = row_from_json(row_to_json(r), "x");
  EXPECT_EQ(s.kv, "q4_0");
  EXPECT_EQ(s.ctx, 512);
  EXPECT_EQ(s.windows, 2);
  EXPECT_EQ(s.ppl, 28.5);
  EXPECT_EQ(s.kl_p99, 0.38);
  EXPECT_FALSE(s.kl_p999.has_value());
  EXPECT_FALSE(s.decode_tps.has_value());
}

TEST(Report, ParsesTheLlamaCppScriptRow) {
  // A line as bench/llama_cpp_eval.py prints it.
  const std::string line =
      R"({"impl": "llama.cpp", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "threads": 2, )"
      R"("machine": "x86_64", "version": "0.3.36", "kv": "q8_0", "bits_per_value": 8.5, )"
      R"("ctx": 512, "windows": 2, "positions": 1022, "step": 512, "ppl": 26.97, "ppl_se": 2.89, )"
      R"("ppl_ratio": 0.9958, "kl_mean": 0.0046, "kl_p99": 0.0306, "kl_p999": 0.0658, )"
      R"("same_top": 0.951, "prefill_tps": null, "decode_tps": null})";
  const ReportRow r = row_from_json(line, "llama");
  EXPECT_EQ(r.impl, "llama.cpp");
  EXPECT_EQ(r.bits_per_value, 8.5);
  EXPECT_EQ(r.step, 512);
  EXPECT_EQ(r.same_top, 0.951);
}

TEST(Report, RejectsBadRows) {
  EXPECT_THROW(row_from_json("not json", "f:1"), Error);
  EXPECT_THROW(row_from_json(R"({"impl":"a"})", "f:1"), Error);
  EXPECT_THROW(row_from_json(R"({"impl":"a","kv":"b","bits_per_value":4,"ctx":0})", "f:1"), Error);
  EXPECT_THROW(row_from_json(R"({"impl":"a","kv":"b","bits_per_value":4,"ctx":8,"ppl":"x"})", "f:1"),
               Error);
  try {
    row_from_json(R"({"impl":"a","kv":"b","bits_per_value":4,"ctx":8,"ppl":"x"})", "rows.jsonl:7");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rows.jsonl:7"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("ppl"), std::string::npos);
  }
}

TEST(Report, Tables) {
  ReportRow speed;
  speed.kv = "fp16";
  speed.bits_per_value = 16;
  speed.ctx = 1024;
  speed.threads = 2;
  speed.prefill_tps = 123.45;
  speed.decode_tps = 20.5;
  const std::vector<ReportRow> rows{sample_row(), speed};
  const std::string q = quality_table(rows);
  EXPECT_NE(q.find("| aquakv | q4_0 | 4.500 | 512 | 2 | 28.5000 ± 3.0000 | 1.0500 | 0.05 | "
                   "0.38 | - | 87.00% |"), std::string::npos) << q;
  EXPECT_EQ(q.find("fp16"), std::string::npos);  // speed-only row is not a quality row
  const std::string s = speed_table(rows);
  EXPECT_NE(s.find("| aquakv | fp16 | 1024 | 2 | 123.5 | 20.50 |"), std::string::npos) << s;
  const std::string p = passkey_table({{"fp16", 1024, 0.5, 4, 3}, {"fp16", 1024, 0.1, 4, 4}});
  EXPECT_NE(p.find("| fp16 | 1024 | 4/4 | 3/4 | 88% |"), std::string::npos) << p;
}

TEST(Report, ChartsArePngFiles) {
  if (std::system("gnuplot --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot";
  std::vector<ReportRow> rows;
  for (const char* kv : {"fp16", "q8_0", "q4_0", "aquakv:/some/dir/aq2.bin,p=4", "kvquant:/some/dir/kvq3.qt"}) {
    ReportRow r = sample_row();
    r.kv = kv;
    r.bits_per_value = kv[1] == 'p' ? 16 : kv[1] == '8' ? 8.5 : 4.5;
    r.kl_mean = kv[1] == 'p' ? 0.0 : kv[1] == '8' ? 0.005 : 0.05;
    for (int64_t ctx : {256, 512}) {
      r.ctx = ctx;
      r.prefill_tps = 1000.0 / double(ctx);
      r.decode_tps = 10.0;
      rows.push_back(r);
    }
  }
  // Per process: /tmp is shared with other checkouts' test runs on the same machine.
  const std::string dir = testing::TempDir() + "/aquakv_report_charts_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  const auto pngs = write_charts(rows, dir);
  ASSERT_EQ(pngs.size(), 2u);
  for (const auto& p : pngs) {
    std::ifstream f(p, std::ios::binary);
    char sig[8] = {};
    f.read(sig, 8);
    EXPECT_EQ(std::string(sig + 1, 3), "PNG") << p;
    EXPECT_GT(std::filesystem::file_size(p), 5000u) << p;
  }
  // Chart labels name an adapter file by its stem, not its path.
  std::ifstream dat(dir + "/quality.dat");
  const std::string d((std::istreambuf_iterator<char>(dat)), std::istreambuf_iterator<char>());
  EXPECT_NE(d.find("\"aquakv:aq2,p=4\""), std::string::npos) << d;
  EXPECT_NE(d.find("\"kvquant:kvq3\""), std::string::npos) << d;
  EXPECT_EQ(d.find("/some/dir"), std::string::npos) << d;
  // Legend outside the plot area (inside, its sample point read as one more configuration).
  std::ifstream gpf(dir + "/quality.gp");
  const std::string gp((std::istreambuf_iterator<char>(gpf)), std::istreambuf_iterator<char>());
  EXPECT_NE(gp.find("set key outside top center"), std::string::npos) << gp;
  EXPECT_EQ(gp.find("set key top right"), std::string::npos) << gp;
  // Labels of the ratio panel (anchor columns 4, 5; 8 points on one spot here) do not overlap:
  // boxes of (length + 0.5) x 1 characters, a character being 1/110 of the panel's log2 x range
  // and 1/40 of its y range (the geometry the placement assumes for 8 pt labels on this canvas).
  double x0, x1, y0, y1;
  ASSERT_EQ(std::sscanf(gp.c_str() + gp.find("set xrange"), "set xrange [%lf:%lf]", &x0, &x1), 2) << gp;
  ASSERT_EQ(std::sscanf(gp.c_str() + gp.find("set yrange"), "set yrange [%lf:%lf]", &y0, &y1), 2) << gp;
  const double cw = (std::log2(x1) - std::log2(x0)) / 110, ch = (y1 - y0) / 40;
  struct Box { double a, b, c, e; std::string label; };
  std::vector<Box> boxes;
  std::istringstream lines(d);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string col[7], label;  // bits ratio kl lx ly kx ky (NaN where a panel has no point)
    for (auto& c : col) f >> c;
    f >> std::quoted(label);
    ASSERT_FALSE(f.fail()) << line;
    const double lx = std::strtod(col[3].c_str(), nullptr), ly = std::strtod(col[4].c_str(), nullptr);
    const double a = std::log2(lx);
    boxes.push_back({a, a + (double(label.size()) + 0.5) * cw, ly - 0.5 * ch, ly + 0.5 * ch, label});
  }
  ASSERT_EQ(boxes.size(), 10u);
  for (size_t i = 0; i < boxes.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      const double w = std::min(boxes[i].b, boxes[j].b) - std::max(boxes[i].a, boxes[j].a);
      const double h = std::min(boxes[i].e, boxes[j].e) - std::max(boxes[i].c, boxes[j].c);
      EXPECT_FALSE(w > 1e-9 && h > 1e-9) << boxes[i].label << " overlaps " << boxes[j].label << "\n" << d;
    }
  }
  if (!std::getenv("AQUAKV_KEEP_CHARTS")) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace aquakv::eval
