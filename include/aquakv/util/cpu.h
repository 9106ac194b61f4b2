// Run-time SIMD level selection. Owns: which kernel family (scalar or AVX2+FMA) runs. Tests force
// the scalar path with set_simd_level(SimdLevel::kScalar) or AQUAKV_SIMD=scalar in the
// environment.
#pragma once

namespace aquakv {

enum class SimdLevel { kScalar = 0, kAvx2 = 1 };

// The level kernels dispatch on: the best the CPU supports, unless forced lower.
SimdLevel simd_level();
// Forces a level (clamped to what the CPU supports). Not thread-safe; call at start-up or in tests.
void set_simd_level(SimdLevel level);
// What the CPU supports, ignoring any forcing.
SimdLevel cpu_simd_level();
const char* simd_level_name(SimdLevel level);

}  // namespace aquakv
