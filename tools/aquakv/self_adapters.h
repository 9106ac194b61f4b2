// `--kv aquakv` without an adapter file, for the tool's subcommands. Owns: the flags of the
// first-run calibration and turning "aquakv[,OPTIONS]" into "aquakv:CACHED_FILE[,OPTIONS]",
// calibrating once with a notice and progress on stderr. Not: the cache lookup itself
// (calib/adapter_cache.h).
#pragma once

#include <string>

#include "aquakv/calib/adapter_cache.h"
#include "command.h"

namespace aquakv::cli {

// Adds --calib-tokens and --calib-window (what a first-run calibration samples).
void add_self_adapter_flags(CLI::App& sub, SelfCalibration& s);

// `spec` unchanged unless it is "aquakv" or "aquakv,OPTIONS"; then the per-user cached adapters
// for `model` (calibrated now if missing) as "aquakv:PATH" plus the options.
std::string resolve_kv_spec(const std::string& spec, const Model& model, const SelfCalibration& s);

}  // namespace aquakv::cli
