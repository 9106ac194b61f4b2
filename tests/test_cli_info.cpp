// `aquakv info`: SIMD level, threads, OpenBLAS kernels (never the generic fallback on a CPU with
// AVX2+FMA unless the user asked for it, util/blas_core.h) and the registry of cache formats.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "cli_runner.h"

namespace aquakv {
namespace {

std::string line_after(const std::string& out, const std::string& key) {
  const auto p = out.find(key);
  if (p == std::string::npos) return "";
  return out.substr(p + key.size(), out.find('\n', p) - p - key.size());
}

TEST(CliInfo, PrintsKernelsAndFormats) {
  const auto r = testing::run_cli("info");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string core = line_after(r.out, "openblas kernels: ");
  EXPECT_FALSE(core.empty()) << r.out;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_NE(core, "Prescott") << "OpenBLAS left on its generic kernels";
    EXPECT_NE(core, "Nehalem");
    EXPECT_NE(core, "Core2");
  }
#endif
  for (const char* f : {"fp16: ", "q8_0 (p=0,b=1)", "higgs2 (p=4,b=128)", "kivi2 (p=0,b=128,rope=pre)", "aquakv (p=4,b=128)"})
    EXPECT_NE(r.out.find(f), std::string::npos) << f << "\n" << r.out;
}

TEST(CliInfo, KeepsTheUsersCoreType) {
  const auto r = testing::run_cli("info", "OPENBLAS_CORETYPE=Prescott");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(line_after(r.out, "openblas kernels: "), "Prescott");
}

}  // namespace
}  // namespace aquakv
