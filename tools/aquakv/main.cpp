// aquakv: command-line front end. Only this file turns errors into exit codes.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>

#include <unistd.h>

#include "aquakv/util/blas_core.h"
#include "aquakv/util/error.h"
#include "command.h"

namespace aquakv::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> r;
  return r;
}

std::string user_cache_root() {
  if (const char* c = std::getenv("AQUAKV_CACHE"); c != nullptr && *c != '\0') return c;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != '\0') return std::string(x) + "/aquakv";
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/aquakv";
}

std::string default_model_path() {
  if (const char* m = std::getenv("AQUAKV_MODEL"); m != nullptr && *m != '\0') return m;
  return user_cache_root() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace aquakv::cli

int main(int argc, char** argv) {
  using namespace aquakv::cli;
  // OpenBLAS reads OPENBLAS_CORETYPE only when it loads: when it fell back to generic kernels on
  // a CPU it does not know, run again once with the right family (util/blas_core.h).
  if (const std::string core = aquakv::blas_core_upgrade(); !core.empty() && std::getenv("AQUAKV_BLAS_REEXEC") == nullptr) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    setenv("AQUAKV_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);  // on failure, carry on with the kernels in use
  }
  CLI::App app{"aquakv: compressed KV caches (AQUA-KV) for llama-family GGUF models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "aquakv 0.1.0");
  std::map<CLI::App*, RunFn> runs;
  for (auto& spec : command_registry()) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.help);
    runs[sub] = spec.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "aquakv: %s\n", e.what());
    return 2;
  }
  try {
    for (auto& [sub, run] : runs) {
      if (sub->parsed()) return run();
    }
  } catch (const aquakv::Error& e) {
    std::fprintf(stderr, "aquakv: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "aquakv: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "aquakv: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
