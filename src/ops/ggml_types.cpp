// Type table of the ggml element types and the dequantization dispatch (see ops/ggml_types.h).
#include "aquakv/ops/ggml_types.h"

#include <array>

#include "aquakv/util/cpu.h"
#include "aquakv/util/check.h"
#include "ggml_blocks.h"
#include "ggml_dequant.h"

namespace aquakv {
namespace {

struct Entry {
  uint32_t id;
  GgmlTypeInfo info;
};

using namespace ggml;

// Every ggml type id with its geometry; `supported` marks those with a decoder here.
constexpr std::array<Entry, 34> kTypes{{
    {0, {"F32", 1, 4, true}},
    {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", kQK, kQ4_0Bytes, true}},
    {3, {"Q4_1", kQK, kQ4_1Bytes, true}},
    {6, {"Q5_0", kQK, kQ5_0Bytes, true}},
    {7, {"Q5_1", kQK, kQ5_1Bytes, true}},
    {8, {"Q8_0", kQK, kQ8_0Bytes, true}},
    {9, {"Q8_1", kQK, kQ8_1Bytes, false}},
    {10, {"Q2_K", kQK_K, kQ2_KBytes, true}},
    {11, {"Q3_K", kQK_K, kQ3_KBytes, true}},
    {12, {"Q4_K", kQK_K, kQ4_KBytes, true}},
    {13, {"Q5_K", kQK_K, kQ5_KBytes, true}},
    {14, {"Q6_K", kQK_K, kQ6_KBytes, true}},
    {15, {"Q8_K", kQK_K, kQ8_KBytes, true}},
    {16, {"IQ2_XXS", kQK_K, 66, false}},
    {17, {"IQ2_XS", kQK_K, 74, false}},
    {18, {"IQ3_XXS", kQK_K, 98, false}},
    {19, {"IQ1_S", kQK_K, 50, false}},
    {20, {"IQ4_NL", kQK, 18, false}},
    {21, {"IQ3_S", kQK_K, 110, false}},
    {22, {"IQ2_S", kQK_K, 82, false}},
    {23, {"IQ4_XS", kQK_K, 136, false}},
    {24, {"I8", 1, 1, false}},
    {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},
    {27, {"I64", 1, 8, false}},
    {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", kQK_K, 56, false}},
    {30, {"BF16", 1, 2, true}},
    {34, {"TQ1_0", kQK_K, 54, false}},
    {35, {"TQ2_0", kQK_K, 66, false}},
    {39, {"MXFP4", kQK, 17, false}},
    {40, {"NVFP4", 64, 36, false}},
    {41, {"Q1_0", 128, 18, false}},
}};

const GgmlTypeInfo* lookup(uint32_t id) {
  for (const auto& e : kTypes) {
    if (e.id == id) return &e.info;
  }
  return nullptr;
}

}  // namespace

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type_id) {
  const GgmlTypeInfo* info = lookup(type_id);
  if (info == nullptr) return std::nullopt;
  return *info;
}

std::string_view ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* info = lookup(static_cast<uint32_t>(type));
  return info != nullptr ? info->name : std::string_view("unknown");
}

std::string_view ggml_supported_type_names() {
  return "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";
}

int64_t ggml_row_bytes(GgmlType type, int64_t n) {
  const GgmlTypeInfo* info = lookup(static_cast<uint32_t>(type));
  AQUAKV_CHECK(info != nullptr && n % info->block_values == 0);
  return n / info->block_values * info->block_bytes;
}

void dequantize_row_ref(GgmlType type, const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, p, size_t(n) * 4); return;
    case GgmlType::F16: ggml::dequant_f16_ref(p, dst, n); return;
    case GgmlType::BF16: ggml::dequant_bf16_ref(p, dst, n); return;
    case GgmlType::Q4_0: ggml::dequant_q4_0_ref(p, dst, n); return;
    case GgmlType::Q4_1: ggml::dequant_q4_1_ref(p, dst, n); return;
    case GgmlType::Q5_0: ggml::dequant_q5_0_ref(p, dst, n); return;
    case GgmlType::Q5_1: ggml::dequant_q5_1_ref(p, dst, n); return;
    case GgmlType::Q8_0: ggml::dequant_q8_0_ref(p, dst, n); return;
    case GgmlType::Q2_K: ggml::dequant_q2_k_ref(p, dst, n); return;
    case GgmlType::Q3_K: ggml::dequant_q3_k_ref(p, dst, n); return;
    case GgmlType::Q4_K: ggml::dequant_q4_k_ref(p, dst, n); return;
    case GgmlType::Q5_K: ggml::dequant_q5_k_ref(p, dst, n); return;
    case GgmlType::Q6_K: ggml::dequant_q6_k_ref(p, dst, n); return;
    case GgmlType::Q8_K: ggml::dequant_q8_k_ref(p, dst, n); return;
    case GgmlType::Q8_1: break;
  }
  AQUAKV_CHECK(false, "dequantize_row_ref: unsupported type (GgufFile refuses these at load)");
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  if (simd_at_least(SimdLevel::kAvx512)) {
    const auto* p = static_cast<const uint8_t*>(src);
    switch (type) {
      case GgmlType::F16: ggml::dequant_f16_avx512(p, dst, n); return;
      case GgmlType::Q4_0: ggml::dequant_q4_0_avx512(p, dst, n); return;
      case GgmlType::Q4_1: ggml::dequant_q4_1_avx512(p, dst, n); return;
      case GgmlType::Q8_0: ggml::dequant_q8_0_avx512(p, dst, n); return;
      default: break;
    }
  }
  if (simd_at_least(SimdLevel::kAvx2)) {
    const auto* p = static_cast<const uint8_t*>(src);
    switch (type) {
      case GgmlType::F16: ggml::dequant_f16_avx2(p, dst, n); return;
      case GgmlType::Q4_0: ggml::dequant_q4_0_avx2(p, dst, n); return;
      case GgmlType::Q4_1: ggml::dequant_q4_1_avx2(p, dst, n); return;
      case GgmlType::Q5_0: ggml::dequant_q5_0_avx2(p, dst, n); return;
      case GgmlType::Q5_1: ggml::dequant_q5_1_avx2(p, dst, n); return;
      case GgmlType::Q8_0: ggml::dequant_q8_0_avx2(p, dst, n); return;
      case GgmlType::Q4_K: ggml::dequant_q4_k_avx2(p, dst, n); return;
      case GgmlType::Q6_K: ggml::dequant_q6_k_avx2(p, dst, n); return;
      default: break;
    }
  }
  dequantize_row_ref(type, src, dst, n);
}

}  // namespace aquakv
