// Progress bar of the aquakv tool: one stderr line per stage ("capture", "fit"), redrawn in
// place, e.g. "capture  [#########                ]  36% (3/8)"; when stderr is not a terminal
// (a log file, a pipe) one line per quarter done instead. Owns only the drawing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include <unistd.h>

namespace aquakv::cli {

class ProgressBar {
 public:
  explicit ProgressBar(bool quiet = false) : quiet_(quiet) {}
  void operator()(const char* stage, int64_t done, int64_t total) {
    if (quiet_) return;
    const int pct = int(100 * done / std::max<int64_t>(1, total));
    if (pct == last_pct_ && done != total) return;
    if (!tty_ && done != total && (last_pct_ < 0 ? pct < 25 : pct / 25 == last_pct_ / 25)) return;
    last_pct_ = pct;
    std::fprintf(stderr, "%s%-8s [%-25.*s] %3d%% (%lld/%lld)", tty_ ? "\r" : "", stage, pct / 4, "#########################", pct,
                 (long long)done, (long long)total);
    if (!tty_ || done == total) std::fputc('\n', stderr);
    if (done == total) {
      last_pct_ = -1;
    }
  }

 private:
  bool quiet_;
  bool tty_ = isatty(fileno(stderr)) != 0;
  int last_pct_ = -1;
};

}  // namespace aquakv::cli
