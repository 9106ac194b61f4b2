// Test helper: runs the built aquakv binary (path AQUAKV_CLI, set by CMake for test_cli_*.cpp)
// with arguments and returns its exit code and combined stdout/stderr.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace aquakv::testing {

struct CliResult {
  int code;
  std::string out;  // stdout and stderr together
};

// env: "NAME=value ..." assignments for the command (shell syntax), or "".
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(AQUAKV_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace aquakv::testing
