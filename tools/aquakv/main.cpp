// aquakv: command-line front end. Only this file turns errors into exit codes.
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>

#include <malloc.h>
#include <unistd.h>

#include "aquakv/util/blas_core.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
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

namespace {

// CLI11 converts integers with strtoll/strtoull: an out-of-range value is clamped, "-1" becomes
// 2^64-1 for an unsigned option and "010" is octal. Every integer option of every subcommand
// therefore first passes this check: decimal digits (a '-' only for signed options), no
// leading zero, and the value must fit 64 bits.
void add_strict_integer_checks(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_type_size() == 0) continue;  // a flag
    const std::string type = opt->get_type_name();
    const bool is_signed = type.rfind("INT", 0) == 0;
    if (!is_signed && type.rfind("UINT", 0) != 0) continue;
    opt->check(CLI::Validator(
        [is_signed](std::string& s) -> std::string {
          const char* b = s.data();
          const char* e = s.data() + s.size();
          const char* digits = is_signed && b != e && *b == '-' ? b + 1 : b;
          const bool lead0 = e - digits > 1 && *digits == '0';
          std::from_chars_result r{};
          if (is_signed) {
            int64_t v = 0;
            r = std::from_chars(b, e, v);
          } else {
            uint64_t v = 0;
            r = std::from_chars(b, e, v);
          }
          if (r.ec == std::errc::result_out_of_range) return "'" + s + "' is out of the 64-bit range";
          if (r.ec != std::errc() || r.ptr != e || lead0 || digits == e)
            return "'" + s + "' is not a decimal integer" + (is_signed ? "" : " >= 0");
          return "";
        },
        ""));
  }
  for (CLI::App* sub : app.get_subcommands({})) add_strict_integer_checks(*sub);
}

// The first word that is not an option must name a subcommand (CLI11 alone would report an
// unknown one as "A subcommand is required").
const char* unknown_subcommand(int argc, char** argv, const CLI::App& app) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--max-text-mb" || a == "--max-data-mb") {
      ++i;  // its value
      continue;
    }
    if (!a.empty() && a[0] == '-') continue;
    for (const CLI::App* sub : app.get_subcommands({}))
      if (sub->get_name() == a) return nullptr;
    return argv[i];
  }
  return nullptr;
}

}  // namespace
}  // namespace aquakv::cli

int main(int argc, char** argv) {
  using namespace aquakv::cli;
  // Large blocks always get their own mappings and freed memory at the heap's top goes back:
  // glibc otherwise raises its mmap threshold to the size of each large block freed, after
  // which such blocks come from the heap and stay resident once freed (measured: 8 MiB of
  // peak RSS with a compressed cache at 2,464 prompt tokens).
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  mallopt(M_TRIM_THRESHOLD, 128 << 10);
  // OpenBLAS reads OPENBLAS_CORETYPE only when it loads: when it fell back to generic kernels on
  // a CPU it does not know, run again once with the right family (util/blas_core.h).
  if (const std::string core = aquakv::blas_core_upgrade(); !core.empty() && std::getenv("AQUAKV_BLAS_REEXEC") == nullptr) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    setenv("AQUAKV_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);  // on failure, carry on with the kernels in use
  }
  aquakv::remove_partial_writes_on_signals();
  CLI::App app{"aquakv: compressed KV caches (AQUA-KV) for llama-family GGUF models"};
  app.require_subcommand(1);
  app.fallthrough();  // the global options below may also follow the subcommand
  app.set_version_flag("--version", "aquakv 0.1.0");
  int64_t max_text_mb = aquakv::read_limits().text_bytes >> 20;
  int64_t max_data_mb = aquakv::read_limits().data_bytes >> 20;
  app.add_option("--max-text-mb", max_text_mb,
                 "size cap of text inputs read whole (texts, prompts, JSON)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  app.add_option("--max-data-mb", max_data_mb,
                 "size cap of binary inputs read whole (adapters, logits files)")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  std::map<CLI::App*, RunFn> runs;
  std::string names;
  for (auto& spec : command_registry()) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.help);
    runs[sub] = spec.setup(*sub);
    names += (names.empty() ? "" : ", ") + spec.name;
  }
  add_strict_integer_checks(app);
  if (const char* bad = unknown_subcommand(argc, argv, app)) {
    std::fprintf(stderr, "aquakv: unknown subcommand '%s' (expected one of: %s; see aquakv --help)\n",
                 bad, names.c_str());
    return 2;
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
  aquakv::read_limits().text_bytes = max_text_mb << 20;
  aquakv::read_limits().data_bytes = max_data_mb << 20;
  int rc = 0;
  try {
    for (auto& [sub, run] : runs) {
      if (sub->parsed()) rc = run();
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
  // A full disk or a closed pipe on standard output is an error, not a success.
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "aquakv: error: cannot write standard output: %s\n",
                 errno != 0 ? std::strerror(errno) : "write error");
    return 1;
  }
  return rc;
}
