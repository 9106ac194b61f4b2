// ggml tensor element types as stored in GGUF files: ids, block geometry, and row
// dequantization. Owns: the block formats' byte layouts and the scalar reference dequantizers.
// Not: file parsing (engine/gguf.h), the block quantizers (ops/ggml_quantize.h) or quantized
// dot products (ops/qdot.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace aquakv {

// Numeric ids are the GGUF on-disk values.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};

struct GgmlTypeInfo {
  std::string_view name;   // "Q4_1"
  int64_t block_values;    // values per block (1 for F32/F16/BF16, 32, or 256 for K-quants)
  int64_t block_bytes;     // bytes per block
  bool supported;          // aquakv can dequantize it
};

// Geometry of a type id read from a file; nullopt for ids aquakv does not know. Ids of ggml
// types that aquakv knows by name but cannot dequantize (IQ*, TQ*, I8..I64, ...) return an
// entry with supported == false, so errors can name them.
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type_id);

// Name of a type ("Q4_1"), or "unknown" for ids not in the table.
std::string_view ggml_type_name(GgmlType type);

// Comma-separated names of the supported types, for error messages.
std::string_view ggml_supported_type_names();

// Bytes taken by a row of n values (n must be a multiple of block_values).
int64_t ggml_row_bytes(GgmlType type, int64_t n);

// Dequantizes n values (multiple of the block size) from src into dst. Dispatches on
// simd_level() (util/cpu.h); every SIMD path is bit-identical to dequantize_row_ref.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// Scalar reference of dequantize_row, kept as the definition of each format. The arithmetic
// order follows the formats' reference decoders (e.g. Q4_1: d*q + m as two roundings), so the
// output is bit-exact with the `gguf` Python package.
void dequantize_row_ref(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace aquakv
