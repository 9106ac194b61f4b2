// Helpers shared by the evaluation subcommands (see eval_cli.h).
#include "eval_cli.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <sstream>

#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv::cli {
ProgressBar::ProgressBar(std::string label) : label_(std::move(label)), tty_(isatty(STDERR_FILENO) != 0) {}
ProgressBar::~ProgressBar() { clear(); }

void ProgressBar::update(int64_t done, int64_t total, double seconds, const std::string& extra) {
  if (!tty_ || total <= 0) return;
  const int width = 30;
  const double f = double(done) / double(total);
  const int fill = int(f * width);
  const double eta = done > 0 ? seconds * double(total - done) / double(done) : 0.0;
  std::string bar(size_t(fill), '=');
  if (fill < width) bar += '>', bar += std::string(size_t(width - fill - 1), ' ');
  std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %lld/%lld %.0fs ETA %.0fs %s", label_.c_str(),
               bar.c_str(), 100 * f, static_cast<long long>(done), static_cast<long long>(total),
               seconds, eta, extra.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (tty_ && drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

std::string command_line() {
  // /proc/self/cmdline: the arguments separated by NULs (Linux); words with spaces are quoted.
  std::string raw, s, word;
  try {
    raw = read_file("/proc/self/cmdline", "", ReadKind::kText);
  } catch (const Error&) {
    return "(unknown command line)";
  }
  for (char c : raw) {
    if (c != '\0') {
      word += c;
      continue;
    }
    if (!s.empty()) s += ' ';
    s += word.find(' ') != std::string::npos ? "'" + word + "'" : word;
    word.clear();
  }
  return s;
}

LoadedModel load_model(const std::string& path, int threads) {
  LoadedModel m;
  m.model = Model::load(path);
  m.tok = std::make_unique<Tokenizer>(Tokenizer::from_gguf(m.model->gguf()));
  m.fwd = std::make_unique<Forward>(*m.model, threads);
  return m;
}

std::string machine_description() {
  std::string info;
  try {
    info = read_file("/proc/cpuinfo", "", ReadKind::kText);
  } catch (const Error&) {
  }
  std::istringstream f(info);
  std::string line, model = "unknown CPU";
  int cores = 0;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) model = line.substr(c + 2);
      ++cores;
    }
  }
  return fmt::format("{}, {} logical cores", model, cores);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

}  // namespace aquakv::cli
