// Run-time SIMD level selection. Owns: which kernel family runs (scalar reference, AVX2+FMA, or
// AVX-512 F/BW/VL/VNNI) and what the CPU offers. Levels are ordered: a kernel without an AVX-512
// version runs its AVX2 version at the AVX-512 level (test with simd_at_least, not ==).
// AQUAKV_SIMD=scalar|avx2|avx512 in the environment, or set_simd_level in tests, forces a level
// (clamped to what the CPU supports).
#pragma once

#include <string>

namespace aquakv {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The level kernels dispatch on: the best the CPU supports, unless forced lower.
SimdLevel simd_level();
// True when simd_level() is `level` or better.
bool simd_at_least(SimdLevel level);
// Forces a level (clamped to what the CPU supports). Not thread-safe; call at start-up or in tests.
void set_simd_level(SimdLevel level);
// What the CPU supports, ignoring any forcing.
SimdLevel cpu_simd_level();
const char* simd_level_name(SimdLevel level);
// Parses "scalar", "avx2" or "avx512"; false for anything else.
bool parse_simd_level(const std::string& name, SimdLevel* out);
// The CPU features behind the levels that this CPU has, e.g. "avx2 fma f16c avx512f ...".
std::string cpu_features();

}  // namespace aquakv
