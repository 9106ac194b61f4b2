#include "aquakv/util/cpu.h"

#include <cstdlib>
#include <cstring>

namespace aquakv {
namespace {

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return SimdLevel::kAvx2;
  }
#endif
  return SimdLevel::kScalar;
}

SimdLevel initial() {
  const char* env = std::getenv("AQUAKV_SIMD");
  if (env != nullptr && std::strcmp(env, "scalar") == 0) return SimdLevel::kScalar;
  return detect();
}

SimdLevel g_level = initial();

}  // namespace

SimdLevel cpu_simd_level() {
  static const SimdLevel cpu = detect();
  return cpu;
}

SimdLevel simd_level() { return g_level; }

void set_simd_level(SimdLevel level) {
  g_level = static_cast<int>(level) <= static_cast<int>(cpu_simd_level()) ? level
                                                                          : cpu_simd_level();
}

const char* simd_level_name(SimdLevel level) {
  return level == SimdLevel::kAvx2 ? "avx2" : "scalar";
}

}  // namespace aquakv
