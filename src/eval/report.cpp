// Report rows, tables and charts (see include/aquakv/eval/report.h).
#include "aquakv/eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

namespace aquakv::eval {
namespace {

using nlohmann::json;

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

template <typename T>
std::optional<T> get_opt(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_number()) fail("{}: field {} must be a number or null, got {}", where, key, j[key].dump());
  return j[key].get<T>();
}

std::string fmt_opt(const std::optional<double>& v, const char* f) {
  return v ? fmt::format(fmt::runtime(f), *v) : std::string("-");
}

std::string series_name(const ReportRow& r) { return r.impl + " " + r.kv; }

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, text, "report");
}

std::string gp_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("''") : std::string(1, c);
  return r + "'";
}

// Runs `gnuplot -e "cd 'dir'" script` without a shell (paths need no quoting beyond gnuplot's).
void run_gnuplot(const std::string& dir, const std::string& script) {
  const std::string cd = "cd " + gp_quote(dir);
  const char* argv[] = {"gnuplot", "-e", cd.c_str(), script.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0)
    fail("report: cannot run gnuplot (install gnuplot-nox) to draw {}", script);
  int status = 0;
  if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("report: gnuplot failed on {}/{} (status {})", dir, script, status);
}

}  // namespace

std::string row_to_json(const ReportRow& r) {
  json j;
  j["impl"] = r.impl;
  j["model"] = r.model;
  j["kv"] = r.kv;
  j["bits_per_value"] = r.bits_per_value;
  j["ctx"] = r.ctx;
  j["threads"] = r.threads;
  j["windows"] = opt(r.windows);
  j["positions"] = opt(r.positions);
  j["step"] = opt(r.step);
  j["ppl"] = opt(r.ppl);
  j["ppl_se"] = opt(r.ppl_se);
  j["ppl_ratio"] = opt(r.ppl_ratio);
  j["kl_mean"] = opt(r.kl_mean);
  j["kl_p99"] = opt(r.kl_p99);
  j["kl_p999"] = opt(r.kl_p999);
  j["same_top"] = opt(r.same_top);
  j["prefill_tps"] = opt(r.prefill_tps);
  j["decode_tps"] = opt(r.decode_tps);
  return j.dump();
}

ReportRow row_from_json(const std::string& line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    fail("{}: not a JSON object ({})", where, e.what());
  }
  if (!j.is_object()) fail("{}: not a JSON object", where);
  ReportRow r;
  for (const char* key : {"impl", "kv"}) {
    if (!j.contains(key) || !j[key].is_string()) fail("{}: missing string field {}", where, key);
  }
  r.impl = j["impl"].get<std::string>();
  r.kv = j["kv"].get<std::string>();
  if (j.contains("model") && j["model"].is_string()) r.model = j["model"].get<std::string>();
  const auto bits = get_opt<double>(j, "bits_per_value", where);
  const auto ctx = get_opt<int64_t>(j, "ctx", where);
  if (!bits || !ctx || *ctx <= 0) fail("{}: fields bits_per_value and ctx (> 0) are required", where);
  r.bits_per_value = *bits;
  r.ctx = *ctx;
  r.threads = int(get_opt<int64_t>(j, "threads", where).value_or(0));
  r.windows = get_opt<int64_t>(j, "windows", where);
  r.positions = get_opt<int64_t>(j, "positions", where);
  r.step = get_opt<int64_t>(j, "step", where);
  r.ppl = get_opt<double>(j, "ppl", where);
  r.ppl_se = get_opt<double>(j, "ppl_se", where);
  r.ppl_ratio = get_opt<double>(j, "ppl_ratio", where);
  r.kl_mean = get_opt<double>(j, "kl_mean", where);
  r.kl_p99 = get_opt<double>(j, "kl_p99", where);
  r.kl_p999 = get_opt<double>(j, "kl_p999", where);
  r.same_top = get_opt<double>(j, "same_top", where);
  r.prefill_tps = get_opt<double>(j, "prefill_tps", where);
  r.decode_tps = get_opt<double>(j, "decode_tps", where);
  return r;
}

std::vector<ReportRow> read_rows(const std::string& path) {
  std::istringstream f(read_file(path, "report rows", ReadKind::kText));
  std::vector<ReportRow> rows;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    rows.push_back(row_from_json(line, fmt::format("{}:{}", path, n)));
  }
  return rows;
}

std::string quality_table(const std::vector<ReportRow>& rows) {
  std::string t =
      "| impl | kv | bits/value | ctx | windows | PPL | PPL ratio | KL mean | KL p99 | KL p99.9 "
      "| same top |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  for (const auto& r : rows) {
    if (!r.ppl) continue;
    t += fmt::format("| {} | {} | {:.3f} | {} | {} | {:.4f} ± {:.4f} | {} | {} | {} | {} | {} |\n",
                     r.impl, r.kv, r.bits_per_value, r.ctx, r.windows.value_or(0), *r.ppl,
                     r.ppl_se.value_or(0), fmt_opt(r.ppl_ratio, "{:.4f}"),
                     fmt_opt(r.kl_mean, "{:.4g}"), fmt_opt(r.kl_p99, "{:.4g}"),
                     fmt_opt(r.kl_p999, "{:.4g}"),
                     r.same_top ? fmt::format("{:.2f}%", 100 * *r.same_top) : std::string("-"));
  }
  return t;
}

std::string speed_table(const std::vector<ReportRow>& rows) {
  std::string t = "| impl | kv | ctx | threads | prefill tok/s | decode tok/s |\n"
                  "|---|---|--:|--:|--:|--:|\n";
  for (const auto& r : rows) {
    if (!r.prefill_tps && !r.decode_tps) continue;
    t += fmt::format("| {} | {} | {} | {} | {} | {} |\n", r.impl, r.kv, r.ctx, r.threads,
                     fmt_opt(r.prefill_tps, "{:.1f}"), fmt_opt(r.decode_tps, "{:.2f}"));
  }
  return t;
}

std::string passkey_table(const std::vector<PasskeyCell>& cells) {
  std::set<double> depths;
  std::map<std::pair<std::string, int64_t>, std::map<double, const PasskeyCell*>> grid;
  std::vector<std::pair<std::string, int64_t>> order;
  for (const auto& c : cells) {
    depths.insert(c.depth);
    auto key = std::make_pair(c.kv, c.len);
    if (!grid.count(key)) order.push_back(key);
    grid[key][c.depth] = &c;
  }
  std::string t = "| kv | length |";
  std::string sep = "|---|--:|";
  for (double d : depths) t += fmt::format(" depth {:g} |", d), sep += "--:|";
  t += " all |\n" + sep + "--:|\n";
  for (const auto& key : order) {
    t += fmt::format("| {} | {} |", key.first, key.second);
    int c_all = 0, n_all = 0;
    for (double d : depths) {
      const auto it = grid[key].find(d);
      if (it == grid[key].end()) {
        t += " - |";
        continue;
      }
      t += fmt::format(" {}/{} |", it->second->correct, it->second->trials);
      c_all += it->second->correct;
      n_all += it->second->trials;
    }
    t += fmt::format(" {:.0f}% |\n", n_all ? 100.0 * c_all / n_all : 0.0);
  }
  return t;
}

// A cache spec short enough for a chart label: the formats whose argument is a calibrated file
// name it by its stem: "aquakv:/path/to/aq2.bin,p=4" -> "aquakv:aq2,p=4" (also kvquant:, cq:).
static std::string chart_label(const std::string& kv) {
  const size_t colon = kv.find(':');
  if (colon == std::string::npos) return kv;
  const std::string name = kv.substr(0, colon);
  if (name != "aquakv" && name != "kvquant" && name != "cq") return kv;
  const size_t comma = kv.find(',', colon);
  const std::string file = kv.substr(colon + 1, comma == std::string::npos ? std::string::npos : comma - colon - 1);
  const std::string opts = comma == std::string::npos ? "" : kv.substr(comma);
  return name + ":" + std::filesystem::path(file).stem().string() + opts;
}

std::vector<std::string> write_charts(const std::vector<ReportRow>& rows, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("report {}: cannot create the directory: {}", dir, ec.message());
  std::vector<std::string> out;
  // Quality: one gnuplot data block per (impl, ctx); columns bits, PPL ratio, KL mean, label.
  std::vector<const ReportRow*> by_bits;
  for (const auto& r : rows)
    if (r.ppl_ratio) by_bits.push_back(&r);
  std::stable_sort(by_bits.begin(), by_bits.end(),
                   [](auto* a, auto* b) { return a->bits_per_value < b->bits_per_value; });
  // Columns 4 and 5 hold the label for points drawn with it above resp. below (the other ""):
  // neighbours in bits alternate, so labels of formats at nearly the same bits do not overlap.
  std::map<std::string, std::string> q;
  std::map<std::string, int> n_in_block;
  for (const ReportRow* rp : by_bits) {
    const ReportRow& r = *rp;
    const std::string name = fmt::format("{} ctx {}", r.impl, r.ctx);
    const bool above = n_in_block[name]++ % 2 == 0;
    const std::string label = "\"" + chart_label(r.kv) + "\"";
    q[name] += fmt::format("{} {} {} {} {}\n", r.bits_per_value, *r.ppl_ratio,
                           r.kl_mean && *r.kl_mean > 0 ? fmt::format("{}", *r.kl_mean) : "NaN",
                           above ? label : "\"\"", above ? "\"\"" : label);
  }
  if (!q.empty()) {
    std::string data, plot_ratio, plot_kl;
    int idx = 0;
    for (const auto& [name, block] : q) {
      data += "# " + name + "\n" + block + "\n\n";
      const std::string sep = idx ? ", " : "";
      // Points, not lines: neighbours in bits are different formats, not one curve.
      for (const auto& [plot, col] : {std::pair{&plot_ratio, 2}, std::pair{&plot_kl, 3}})
        *plot += fmt::format("{0}'quality.dat' index {1} using 1:{2} with points pt 7 ps 1.2 title '{3}', "
                             "'' index {1} using 1:{2}:4 with labels left offset 0.6,0.7 font ',8' notitle, "
                             "'' index {1} using 1:{2}:5 with labels left offset 0.6,-0.7 font ',8' notitle",
                             sep, idx, col, name);
      ++idx;
    }
    write_text(dir + "/quality.dat", data);
    write_text(dir + "/quality.gp",
               "set terminal pngcairo noenhanced size 1400,600 font 'sans,10'\nset output 'quality.png'\n"
               "set multiplot layout 1,2 title 'Quality against storage bits per value'\n"
               // The key sits above the plots, boxed: inside the plot area its sample point read as one more
               // configuration.
               "set grid\nset xlabel 'bits per value (log scale)'\nset key outside top center horizontal box\n"
               "set logscale x 2\nset xtics (1, 2, 3, 4, 5, 6, 8, 12, 16, 32)\nset offsets graph 0.03, graph 0.1, graph 0.05, graph 0.05\n"
               "set ylabel 'PPL / PPL(16-bit cache)'\nplot " + plot_ratio + "\n"
               "set logscale y\nset format y '%.0e'\nset ylabel 'mean KL divergence to the 16-bit cache (nats)'\nplot " +
               plot_kl + "\nunset multiplot\n");
    out.push_back(dir + "/quality.png");
  }
  // Speed: one block per (impl, kv); columns ctx, prefill, decode.
  std::map<std::string, std::vector<const ReportRow*>> s;
  for (const auto& r : rows)
    if (r.prefill_tps || r.decode_tps) s[series_name(r)].push_back(&r);
  if (!s.empty()) {
    std::string data, plot_p, plot_d;
    int idx = 0;
    for (auto& [name, v] : s) {
      std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->ctx < b->ctx; });
      data += "# " + name + "\n";
      for (auto* r : v)
        data += fmt::format("{} {} {}\n", r->ctx, r->prefill_tps ? fmt::format("{}", *r->prefill_tps) : "NaN",
                            r->decode_tps ? fmt::format("{}", *r->decode_tps) : "NaN");
      data += "\n\n";
      const std::string sep = idx ? ", " : "";
      // Solid lines for aquakv, dashed for other implementations (e.g. llama.cpp rows).
      const int dash = v.front()->impl == "aquakv" ? 1 : 2;
      plot_p += fmt::format("{}'speed.dat' index {} using 1:2 with linespoints pt 7 dt {} title '{}'",
                            sep, idx, dash, name);
      plot_d += fmt::format("{}'speed.dat' index {} using 1:3 with linespoints pt 7 dt {} title '{}'",
                            sep, idx, dash, name);
      ++idx;
    }
    write_text(dir + "/speed.dat", data);
    write_text(dir + "/speed.gp",
               "set terminal pngcairo noenhanced size 1200,500 font 'sans,10'\nset output 'speed.png'\n"
               "set multiplot layout 1,2 title 'Speed against context length'\n"
               "set grid\nset logscale x 2\nset xlabel 'context (tokens)'\nset key top right\n"
               "set ylabel 'prefill tokens/s'\nplot " + plot_p + "\n"
               "set ylabel 'decode tokens/s at that depth'\nplot " + plot_d +
               "\nunset multiplot\n");
    out.push_back(dir + "/speed.png");
  }
  for (const auto& png : out) {
    const std::string name = std::filesystem::path(png).filename().string();
    run_gnuplot(dir, name.substr(0, name.size() - 3) + "gp");
  }
  return out;
}

}  // namespace aquakv::eval
