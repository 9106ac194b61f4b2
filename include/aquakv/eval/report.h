// Result rows of the evaluation matrix and their renderings. Owns: the row format shared by
// `aquakv report` and bench/llama_cpp_eval.py (one JSON object per line), the Markdown tables
// and the gnuplot charts (quality vs bits per value, tokens/s vs context). Not: running
// anything (tools/aquakv/cmd_report.cpp runs the matrix; the charts are drawn by gnuplot).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace aquakv::eval {

// One (implementation, cache format, context) measurement. Absent values are JSON null.
struct ReportRow {
  std::string impl = "aquakv";  // "aquakv" or "llama.cpp"
  std::string model;            // model file name
  std::string kv;               // cache spec, e.g. "fp16", "q4_0"
  double bits_per_value = 0;    // storage bits per cached value, all overheads counted
  int64_t ctx = 0;
  int threads = 0;
  std::optional<int64_t> windows, positions, step;
  std::optional<double> ppl, ppl_se, ppl_ratio;          // ratio to the same impl's 16-bit cache
  std::optional<double> kl_mean, kl_p99, kl_p999, same_top;
  std::optional<double> prefill_tps, decode_tps;         // tokens per second
};

std::string row_to_json(const ReportRow& row);  // one line, no newline
// Parses one line; throws Error naming `where` (e.g. "rows.jsonl:3") and the bad field.
ReportRow row_from_json(const std::string& line, const std::string& where);
std::vector<ReportRow> read_rows(const std::string& path);  // JSON lines; blank lines skipped

// Markdown tables: quality rows (those with a PPL) and speed rows (those with a rate).
std::string quality_table(const std::vector<ReportRow>& rows);
std::string speed_table(const std::vector<ReportRow>& rows);

// One passkey cell: `correct` of `trials` prompts of `len` tokens with the key at `depth`.
struct PasskeyCell {
  std::string kv;
  int64_t len = 0;
  double depth = 0;
  int trials = 0, correct = 0;
};
std::string passkey_table(const std::vector<PasskeyCell>& cells);

// Writes quality.png (PPL ratio and mean KL against bits per value, one point per cache format
// and context) and speed.png (prefill and decode tokens/s against context) into `dir`, with the
// gnuplot scripts and data files next to them so the charts can be redrawn by hand. Returns the
// paths of the PNGs written (a chart with no data is skipped). Throws Error if gnuplot fails.
std::vector<std::string> write_charts(const std::vector<ReportRow>& rows, const std::string& dir);

}  // namespace aquakv::eval
