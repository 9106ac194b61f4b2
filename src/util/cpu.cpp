#include "aquakv/util/cpu.h"

#include <cstdio>
#include <cstdlib>

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

// __builtin_cpu_supports also checks that the OS saves the registers (XCR0) for AVX and AVX-512.
bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
}
bool has_avx512() {
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

SimdLevel detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (has_avx512()) return SimdLevel::kAvx512;
  if (has_avx2()) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kScalar;
}

SimdLevel clamp(SimdLevel level) {
  return static_cast<int>(level) <= static_cast<int>(cpu_simd_level()) ? level : cpu_simd_level();
}

// The environment is read at start-up (static initialization), where no error can be reported
// through aquakv::Error; an unknown value is named on stderr and ignored.
SimdLevel initial() {
  const char* env = std::getenv("AQUAKV_SIMD");
  if (env == nullptr || *env == '\0') return cpu_simd_level();
  SimdLevel level;
  if (!parse_simd_level(env, &level)) {
    std::fprintf(stderr, "aquakv: AQUAKV_SIMD='%s' is not scalar, avx2 or avx512; ignored\n", env);
    return cpu_simd_level();
  }
  return clamp(level);
}

SimdLevel g_level = initial();

}  // namespace

SimdLevel cpu_simd_level() {
  static const SimdLevel cpu = detect();
  return cpu;
}

SimdLevel simd_level() { return g_level; }

bool simd_at_least(SimdLevel level) { return static_cast<int>(g_level) >= static_cast<int>(level); }

void set_simd_level(SimdLevel level) { g_level = clamp(level); }

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kAvx512: return "avx512";
    case SimdLevel::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool parse_simd_level(const std::string& name, SimdLevel* out) {
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (name == simd_level_name(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

std::string cpu_features() {
  std::string s;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  auto add = [&](const char* name, bool has) {
    if (has) s += s.empty() ? name : std::string(" ") + name;
  };
  add("avx2", __builtin_cpu_supports("avx2"));
  add("fma", __builtin_cpu_supports("fma"));
  add("f16c", has_f16c());
  add("avx512f", __builtin_cpu_supports("avx512f"));
  add("avx512bw", __builtin_cpu_supports("avx512bw"));
  add("avx512vl", __builtin_cpu_supports("avx512vl"));
  add("avx512vnni", __builtin_cpu_supports("avx512vnni"));
  add("avx512bf16", __builtin_cpu_supports("avx512bf16"));
#endif
  return s.empty() ? "none" : s;
}

}  // namespace aquakv
