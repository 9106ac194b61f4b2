// Helpers shared by the evaluation subcommands (perplexity, passkey, report). Owns: the
// terminal progress bar, the command line as run, and loading
// model + tokenizer + forward for a run. Not: the evaluation itself (eval/).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"

namespace aquakv::cli {

// A one-line progress bar with ETA on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();
  void update(int64_t done, int64_t total, double seconds, const std::string& extra = "");
  void clear();  // erases the line (before printing other output)

 private:
  std::string label_;
  bool tty_;
  bool drawn_ = false;
};

// The command line as typed (for result files and docs/RESULTS.md).
std::string command_line();

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Forward> fwd;
};
LoadedModel load_model(const std::string& path, int threads);

// "CPU model name, N cores" from /proc/cpuinfo (for result files).
std::string machine_description();

// UTC time as "YYYY-MM-DD HH:MM:SS UTC".
std::string utc_now();

}  // namespace aquakv::cli
