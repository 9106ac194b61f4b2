// Report rows, tables and charts (see include/aquakv/eval/report.h).
#include "aquakv/eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

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

namespace {

// A chart point in panel coordinates (x = log2 bits; y = the panel's value, log10 for KL) with
// its label's length, and where the label's left end goes (lx, ly).
struct ChartPoint {
  double x, y;
  size_t len;
  double lx = NAN, ly = NAN;
  double ex = NAN, ey = NAN;  // the label end a connector line reaches (labels moved off the first ring)
};

// The panel's axis ranges, in panel coordinates; the plot script sets exactly these.
struct PanelRange {
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
};

// Places each label beside its point where it overlaps no label placed before and no point:
// candidates right / left of the point, then further up / down, in units of the label font's
// character size relative to the panel's axis ranges (a 1400x600 canvas, two panels, 8 pt
// labels: a character is ~1/110 of the width and ~1/40 of the height). The first free
// candidate wins; when none is free, the one with the least overlap. Returns the axis ranges:
// the data padded left and right (room for labels) and above and below.
PanelRange place_labels(std::vector<ChartPoint>& p) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& c : p) {
    if (!std::isfinite(c.y)) continue;
    x0 = std::min(x0, c.x), x1 = std::max(x1, c.x), y0 = std::min(y0, c.y), y1 = std::max(y1, c.y);
  }
  if (!std::isfinite(x0)) return {};
  const double xs = std::max(x1 - x0, 1.0), ys = std::max(y1 - y0, 1e-3);
  const PanelRange r{x0 - 0.06 * xs, x1 + 0.22 * xs, y0 - 0.1 * ys, y1 + 0.1 * ys};
  const double cw = (r.x1 - r.x0) / 110, ch = (r.y1 - r.y0) / 40;
  struct Box { double a, b, c, d; };  // x from a to b, y from c to d
  std::vector<Box> used;
  for (const auto& c : p) {
    if (std::isfinite(c.y)) used.push_back({c.x - 0.5 * cw, c.x + 0.5 * cw, c.y - 0.4 * ch, c.y + 0.4 * ch});
  }
  const auto overlap = [&](const Box& b) {
    double o = 0;
    for (const Box& u : used) {
      const double w = std::min(b.b, u.b) - std::max(b.a, u.a), h = std::min(b.d, u.d) - std::max(b.c, u.c);
      if (w > 0 && h > 0) o += w * h;
    }
    return o;
  };
  const double dys[] = {0.7, -0.7, 1.8, -1.8, 2.9, -2.9, 4.0, -4.0};
  for (auto& c : p) {
    if (!std::isfinite(c.y)) continue;
    const double w = (double(c.len) + 0.5) * cw;
    Box best{};
    double best_o = INFINITY, best_dy = 0;
    bool right = true;
    for (double dy : dys) {
      for (double dx : {0.8 * cw, -0.8 * cw - w}) {
        const Box b{c.x + dx, c.x + dx + w, c.y + dy * ch - 0.5 * ch, c.y + dy * ch + 0.5 * ch};
        const double o = overlap(b);
        if (o < best_o) best_o = o, best = b, best_dy = dy, right = dx > 0;
        if (o == 0) break;
      }
      if (best_o == 0) break;
    }
    used.push_back(best);
    c.lx = best.a;
    c.ly = 0.5 * (best.c + best.d);
    if (std::fabs(best_dy) > 1) {
      c.ex = right ? best.a : best.b;
      c.ey = c.ly;
    }
  }
  return r;
}

}  // namespace

std::vector<std::string> write_charts(const std::vector<ReportRow>& rows, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("report {}: cannot create the directory: {}", dir, ec.message());
  std::vector<std::string> out;
  // Quality: one gnuplot data block per (impl, ctx); columns bits, PPL ratio, KL mean, then the
  // label's anchor in each panel (x, y for the ratio panel, x, y for the KL panel) and the label.
  std::vector<const ReportRow*> pts;
  for (const auto& r : rows)
    if (r.ppl_ratio) pts.push_back(&r);
  std::stable_sort(pts.begin(), pts.end(),
                   [](auto* a, auto* b) { return a->bits_per_value < b->bits_per_value; });
  std::vector<std::string> labels;
  std::vector<ChartPoint> ratio_pts, kl_pts;
  for (const ReportRow* rp : pts) {
    labels.push_back(chart_label(rp->kv));
    ratio_pts.push_back({std::log2(rp->bits_per_value), *rp->ppl_ratio, labels.back().size()});
    const bool kl = rp->kl_mean && *rp->kl_mean > 0;
    kl_pts.push_back({std::log2(rp->bits_per_value), kl ? std::log10(*rp->kl_mean) : NAN, labels.back().size()});
  }
  const PanelRange rr = place_labels(ratio_pts), kr = place_labels(kl_pts);
  std::map<std::string, std::string> q;
  for (size_t i = 0; i < pts.size(); ++i) {
    const ReportRow& r = *pts[i];
    const ChartPoint& a = ratio_pts[i];
    const ChartPoint& k = kl_pts[i];
    const auto num = [](double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string("NaN"); };
    q[fmt::format("{} ctx {}", r.impl, r.ctx)] +=
        fmt::format("{} {} {} {} {} {} {} \"{}\" {} {} {} {}\n", r.bits_per_value, *r.ppl_ratio,
                    r.kl_mean && *r.kl_mean > 0 ? fmt::format("{}", *r.kl_mean) : "NaN", num(std::exp2(a.lx)),
                    num(a.ly), num(std::exp2(k.lx)), num(std::pow(10.0, k.ly)), labels[i],
                    num(std::exp2(a.ex)), num(a.ey), num(std::exp2(k.ex)), num(std::pow(10.0, k.ey)));
  }
  if (!q.empty()) {
    std::string data, plot_ratio, plot_kl;
    int idx = 0;
    for (const auto& [name, block] : q) {
      data += "# " + name + "\n" + block + "\n\n";
      const std::string sep = idx ? ", " : "";
      // Points, not lines: neighbours in bits are different formats, not one curve.
      // Columns: 1 bits, 2 ratio, 3 KL, 4-5 / 6-7 label anchors, 8 label, 9-10 / 11-12 connector
      // ends (NaN: the label sits next to its point).
      for (const auto& [plot, col, lcol, ecol] : {std::tuple{&plot_ratio, 2, 4, 9}, std::tuple{&plot_kl, 3, 6, 11}})
        *plot += fmt::format("{0}'quality.dat' index {1} using 1:{2} with points pt 7 ps 1.2 title '{3}', "
                             "'' index {1} using {4}:{5}:8 with labels left font ',8' notitle, "
                             "'' index {1} using 1:{2}:(${6}-$1):(${7}-${2}) with vectors nohead lc rgb 'gray60' notitle",
                             sep, idx, col, name, lcol, lcol + 1, ecol, ecol + 1);
      ++idx;
    }
    write_text(dir + "/quality.dat", data);
    write_text(dir + "/quality.gp",
               "set terminal pngcairo noenhanced size 1400,600 font 'sans,10'\nset output 'quality.png'\n"
               "set multiplot layout 1,2 title 'Quality against storage bits per value'\n"
               // The key sits above the plots, boxed: inside the plot area its sample point read as one more
               // configuration.
               "set grid\nset xlabel 'bits per value (log scale)'\nset key outside top center horizontal box\n"
               "set logscale x 2\nset xtics (1, 2, 3, 4, 5, 6, 8, 12, 16, 32)\n" +
               fmt::format("set xrange [{}:{}]\nset yrange [{}:{}]\n", std::exp2(rr.x0), std::exp2(rr.x1), rr.y0, rr.y1) +
               "set ylabel 'PPL / PPL(16-bit cache)'\nplot " + plot_ratio + "\n"
               "set logscale y\nset format y '%.0e'\n" +
               fmt::format("set xrange [{}:{}]\nset yrange [{}:{}]\n", std::exp2(kr.x0), std::exp2(kr.x1),
                           std::pow(10.0, kr.y0), std::pow(10.0, kr.y1)) +
               "set ylabel 'mean KL divergence to the 16-bit cache (nats)'\nplot " + plot_kl + "\nunset multiplot\n");
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
