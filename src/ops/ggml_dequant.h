// Private to src/ops: per-format row decoders. *_ref are the scalar definitions; *_avx2 live in
// ggml_dequant_avx2.cpp and *_avx512 in ggml_dequant_avx512.cpp, and must produce bit-identical floats. n is a multiple of the block size.
#pragma once

#include <cstdint>

namespace aquakv::ggml {

void dequant_f16_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_bf16_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_0_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_1_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q5_0_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q5_1_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q8_0_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q2_k_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q3_k_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_k_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q5_k_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q6_k_ref(const uint8_t* src, float* dst, int64_t n);
void dequant_q8_k_ref(const uint8_t* src, float* dst, int64_t n);

void dequant_f16_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_0_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_1_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q5_0_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q5_1_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q8_0_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_k_avx2(const uint8_t* src, float* dst, int64_t n);
void dequant_q6_k_avx2(const uint8_t* src, float* dst, int64_t n);

void dequant_f16_avx512(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_0_avx512(const uint8_t* src, float* dst, int64_t n);
void dequant_q4_1_avx512(const uint8_t* src, float* dst, int64_t n);
void dequant_q8_0_avx512(const uint8_t* src, float* dst, int64_t n);

}  // namespace aquakv::ggml
