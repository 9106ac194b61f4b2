#include "aquakv/util/blas_core.h"

#include <cstdlib>

extern "C" char* openblas_get_corename(void);

namespace aquakv {

std::string blas_core_name() {
  const char* n = openblas_get_corename();
  return n != nullptr ? n : "";
}

std::string blas_core_upgrade() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return "";
  const std::string core = blas_core_name();
  // The generic x86-64 families OpenBLAS falls back to for CPUs it does not know.
  if (core != "Prescott" && core != "Core2" && core != "Penryn" && core != "Dunnington" &&
      core != "Nehalem" && core != "Atom" && core != "Katmai" && core != "Coppermine" &&
      core != "Northwood" && core != "Banias" && core != "prescott" && core != "core2" &&
      core != "nehalem")
    return "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

}  // namespace aquakv
