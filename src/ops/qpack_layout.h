// Private to src/ops: what the packed-weight files (qpack*.cpp) share -- each 32-block type's
// packed geometry, unaligned little-endian loads, f16 scales, and the per-activation-block code
// sums that turn a biased or offset integer dot into the exact one. Layouts: ops/qpack.h.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/qdot.h"
#include "ggml_blocks.h"

namespace aquakv::detail {

// Packed block geometry of the 32-block types (compile time; the kernels are templates on it).
template <GgmlType T>
struct PackGeo {
  static constexpr bool kQ8 = T == GgmlType::Q8_0;
  static constexpr bool kQ5 = T == GgmlType::Q5_0 || T == GgmlType::Q5_1;
  static constexpr bool kMin = T == GgmlType::Q4_1 || T == GgmlType::Q5_1;  // stored offsets m
  static constexpr int64_t kRowBlock = T == GgmlType::Q4_0 ? ggml::kQ4_0Bytes
                                       : T == GgmlType::Q4_1 ? ggml::kQ4_1Bytes
                                       : T == GgmlType::Q5_0 ? ggml::kQ5_0Bytes
                                       : T == GgmlType::Q5_1 ? ggml::kQ5_1Bytes : ggml::kQ8_0Bytes;
  static constexpr int64_t kMaskOff = kMin ? 64 : 32;  // Q5_*: fifth-bit masks
  static constexpr int64_t kHdr = kMaskOff + (kQ5 ? 64 : 0);
  static constexpr float kOffset = T == GgmlType::Q4_0 ? -8.0f : -16.0f;  // m = kOffset * dw when !kMin
};

// Software prefetch for the packed kernels: the lines of the block kPrefetchAhead bytes past
// `blk` (the next groups' blocks of a matrix streamed once per token) are requested while this
// block is computed. One core's hardware prefetchers alone keep too few lines in flight to
// reach the memory bandwidth at decode (measured in docs/RESULTS.md). Prefetches of addresses
// past the matrix are hints and never fault.
// AQUAKV_PREFETCH=BYTES overrides the distance (0 = off); a value that is not a whole number of
// bytes is reported on stderr once and ignored, as AQUAKV_SIMD is.
inline int64_t qpack_prefetch_ahead() {
  static const int64_t d = [] {
    constexpr int64_t kDefault = 2048;
    const char* e = std::getenv("AQUAKV_PREFETCH");
    if (e == nullptr || *e == '\0') return kDefault;
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end != '\0' || v < 0 || v > (1LL << 20)) {
      std::fprintf(stderr, "aquakv: AQUAKV_PREFETCH='%s' is not a byte count in 0..1048576; ignored\n", e);
      return kDefault;
    }
    return int64_t(v);
  }();
  return d;
}
inline void prefetch_block(const uint8_t* blk, int64_t bytes) {
  const int64_t ahead = qpack_prefetch_ahead();
  if (ahead <= 0) return;
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(blk + ahead + o, 0, 3);
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// out[i * parts + h] = scale * (sum of the codes of part h of activation block i), for the n
// blocks of x split into `parts` equal runs: Q8_0's 128 * sum(q) (parts 1), Q6_K's 32 * sum of
// each 16-code half (parts 2). Exact in int32. Once per call: the result serves every row.
inline void code_sums(const Q8Act* x, int64_t n, int parts, int32_t scale, std::vector<int32_t>& out) {
  out.resize(static_cast<size_t>(n * parts));
  const int len = 32 / parts;
  for (int64_t i = 0; i < n; ++i) {
    for (int h = 0; h < parts; ++h) {
      int32_t s = 0;
      for (int k = 0; k < len; ++k) s += x[i].q[h * len + k];
      out[size_t(i * parts + h)] = scale * s;
    }
  }
}

}  // namespace aquakv::detail
