// Private to src/ops: the K-quant (Q4_K, Q5_K, Q6_K) half of ops/qpack.h -- packing, unpacking, the
// scalar reference (qpack_k.cpp; layouts described there) and the SIMD kernels
// (qpack_k_avx2.cpp, qpack_k_avx512.cpp). Reached through the ops/qpack.h entry points.
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/qdot.h"

namespace aquakv::detail {

// Bytes of one row's super-block in the GGUF file (Q4_K 144, Q5_K 176, Q6_K 210) and packed
// (Q4_K 148, Q5_K 180: the 16 six-bit scale and offset codes take a byte each; Q6_K 210).
inline int64_t qpack_k_row_block(GgmlType type) {
  return type == GgmlType::Q4_K ? 144 : type == GgmlType::Q5_K ? 176 : 210;
}
inline int64_t qpack_k_packed_block(GgmlType type) {
  return type == GgmlType::Q4_K ? 148 : type == GgmlType::Q5_K ? 180 : 210;
}
inline bool qpack_is_k(GgmlType type) {
  return type == GgmlType::Q4_K || type == GgmlType::Q5_K || type == GgmlType::Q6_K;
}
// Q5_K: the fifth-bit masks follow Q4_K's layout: word (j, c) at this offset + 64j + 8c.
inline constexpr int64_t kQ5KMasks = 2368;

void qpack_group_k(GgmlType type, const uint8_t* rows, int64_t row_bytes, int64_t cols, uint8_t* group);
void qunpack_group_k(GgmlType type, const uint8_t* group, int64_t cols, uint8_t* rows, int64_t row_bytes);
void qpack_dot_k_ref(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                     const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);
void qpack_dot_k_avx2(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                      const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);
void qpack_dot_k_avx512(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                        const Q8Act* x, int64_t n_act, float* out, int64_t out_stride);

}  // namespace aquakv::detail
