// `--kv aquakv` without a file (self_adapters.h).
#include "self_adapters.h"

#include <cstdio>

#include "aquakv/kv/compressed_formats.h"
#include "progress.h"

namespace aquakv::cli {

void add_self_adapter_flags(CLI::App& sub, SelfCalibration& s) {
  sub.add_option("--calib-tokens", s.gen_tokens,
                 "--kv aquakv without a file: tokens the model generates for its one-time calibration")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sub.add_option("--calib-window", s.window, "--kv aquakv without a file: tokens per generated calibration sequence")
      ->capture_default_str()->check(CLI::Range(int64_t(2), int64_t(1) << 20));
}

std::string resolve_kv_spec(const std::string& spec, const Model& model, const SelfCalibration& s) {
  if (spec != "aquakv" && spec.rfind("aquakv,", 0) != 0) return spec;
  check_aquakv_options(spec.substr(6));  // a typo fails now, not after minutes of calibration
  ProgressBar bar;
  const CachedAdapters c = cached_self_adapters(
      model, s, user_cache_root() + "/adapters",
      [&](const std::string& path) {
        std::fprintf(stderr,
                     "aquakv: no AQUA-KV adapters for this model yet: calibrating once on %lld tokens it generates "
                     "itself (seed %llu), saved to %s\n",
                     (long long)s.gen_tokens, (unsigned long long)s.seed, path.c_str());
      },
      [&](const char* stage, int64_t done, int64_t total) { bar(stage, done, total); });
  if (c.calibrated) std::fprintf(stderr, "aquakv: calibrated in %.1f s\n", c.seconds);
  return "aquakv:" + c.path + spec.substr(6);  // spec.substr(6): "" or ",OPTIONS"
}

}  // namespace aquakv::cli
