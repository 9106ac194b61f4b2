// `aquakv info`: prints what aquakv sees of the machine (SIMD level, threads) and the registered
// KV cache formats.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/ops/qpack.h"
#include "aquakv/util/blas_core.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/parallel.h"
#include "command.h"

namespace aquakv::cli {
namespace {

const CommandRegistrar reg{"info", "print build and machine information", [](CLI::App& sub) {
  return RunFn([] {
    std::printf("simd: %s (cpu supports %s; AQUAKV_SIMD=scalar|avx2|avx512 forces a lower one)\n"
                "cpu features: %s\nthreads: %d\n", simd_level_name(simd_level()),
                simd_level_name(cpu_simd_level()), cpu_features().c_str(), num_threads());
    std::printf("openblas kernels: %s\n", blas_core_name().c_str());
    const char* rp = std::getenv("AQUAKV_REPACK");
    std::printf("weights: Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K matrices %s (AQUAKV_REPACK=0 keeps the GGUF row layout)\n",
                rp != nullptr && std::string(rp) == "0" ? "in the GGUF row layout"
                                                        : "repacked at load into 16-row groups");
    std::printf("weight prefetch: %lld bytes ahead (AQUAKV_PREFETCH=BYTES; 0 = off)\n", (long long)qpack_prefetch_bytes());
    std::printf("decode attention on q8_0/q4_0 keys and values: %s (AQUAKV_ATTN_QBLOCK=0|1)\n",
                attend_qblock_enabled() ? "integer dots on the blocks" : "tiles decoded to f32");
    std::printf("decode attention on higgs 2x16 keys: %s (AQUAKV_ATTN_LUT=0|1)\n",
                attend_lut_enabled() ? "byte tables per query over the grid" : "exact dots in the inner basis");
    std::printf("kv cache formats (--kv NAME[:ARGS][,OPTIONS]; defaults in parentheses):\n");
    std::fputs(cache_formats_help().c_str(), stdout);
    return 0;
  });
}};

}  // namespace
}  // namespace aquakv::cli
