// Subcommand registry of the aquakv tool. Owns: how a cmd_*.cpp file adds a subcommand. Each
// file defines one `static const CommandRegistrar r{"name", "help", setup};` where setup adds
// the subcommand's flags to `sub` and returns the function main() calls when it is chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace aquakv::cli {

using RunFn = std::function<int()>;
using SetupFn = std::function<RunFn(CLI::App& sub)>;

struct CommandSpec {
  std::string name;
  std::string help;
  SetupFn setup;
};

std::vector<CommandSpec>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string help, SetupFn setup) {
    command_registry().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

// Per-user cache directory: $AQUAKV_CACHE, else $XDG_CACHE_HOME/aquakv, else ~/.cache/aquakv.
// Models live under models/ (scripts/fetch_model.sh), self-calibrated adapters under adapters/.
std::string user_cache_root();

// Default model path: $AQUAKV_MODEL, else the cache that scripts/fetch_model.sh fills.
std::string default_model_path();

}  // namespace aquakv::cli
