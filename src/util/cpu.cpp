#include "aquakv/util/cpu.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace aquakv {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// F16C (CPUID leaf 1, ECX bit 29) read directly: clang's __builtin_cpu_supports does not know
// "f16c".
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
}
#endif

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      has_f16c()) {
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
