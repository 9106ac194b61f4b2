// Scalar reference decoders of the ggml block formats. Each is the definition of its format:
// byte layouts are in ggml_blocks.h, value formulas in the comments. Products are formed in
// float32 in the order written (no fused multiply-add; this file is compiled without -mfma),
// which is what makes the output bit-exact with the `gguf` Python package. (For the formats here
// the products are in fact exact in float32 -- an fp16 scale has 11 significant bits, codes at
// most 8 -- so only the final add/subtract rounds; the order still matters for that one.)
#include <cstring>

#include "ggml_blocks.h"
#include "ggml_dequant.h"

// Multiply and add must stay two roundings (the formats' definition); forbid contraction to FMA,
// which -mfma would otherwise allow the compiler to do.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv::ggml {

void dequant_f16_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = read_f16(src + 2 * i);
}

void dequant_bf16_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = bf16_to_fp32(h);
  }
}

// Value i of a 32-value block whose 4-bit codes sit in qs[16]: low nibbles hold values 0..15,
// high nibbles values 16..31.
static inline int nibble(const uint8_t* qs, int i) {
  return i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
}

// Q4_0: x_i = d * (q_i - 8).
void dequant_q4_0_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_0Bytes, dst += kQK) {
    const float d = read_f16(src);
    for (int i = 0; i < kQK; ++i) dst[i] = d * float(nibble(src + 2, i) - 8);
  }
}

// Q4_1: x_i = d * q_i + m.
void dequant_q4_1_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_1Bytes, dst += kQK) {
    const float d = read_f16(src), m = read_f16(src + 2);
    for (int i = 0; i < kQK; ++i) dst[i] = d * float(nibble(src + 4, i)) + m;
  }
}

// Q5_0: q_i = nibble | (bit i of qh) << 4, x_i = d * (q_i - 16).
void dequant_q5_0_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ5_0Bytes, dst += kQK) {
    const float d = read_f16(src);
    const uint32_t qh = read_u32(src + 2);
    for (int i = 0; i < kQK; ++i) {
      const int q = nibble(src + 6, i) | int((qh >> i) & 1u) << 4;
      dst[i] = d * float(q - 16);
    }
  }
}

// Q5_1: q_i as Q5_0, x_i = d * q_i + m.
void dequant_q5_1_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ5_1Bytes, dst += kQK) {
    const float d = read_f16(src), m = read_f16(src + 2);
    const uint32_t qh = read_u32(src + 4);
    for (int i = 0; i < kQK; ++i) {
      const int q = nibble(src + 8, i) | int((qh >> i) & 1u) << 4;
      dst[i] = d * float(q) + m;
    }
  }
}

// Q8_0: x_i = d * q_i, q_i signed bytes.
void dequant_q8_0_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ8_0Bytes, dst += kQK) {
    const float d = read_f16(src);
    for (int i = 0; i < kQK; ++i) dst[i] = float(int8_t(src[2 + i])) * d;
  }
}

// Q2_K: 16 sub-blocks of 16 values. scales[s] = (min code << 4) | scale code. Value i:
// 2-bit q = (qs[32*(i/128) + i%32] >> 2*((i%128)/32)) & 3,
// x_i = (d * sc) * q - (dmin * mn) with sc, mn of sub-block i/16.
void dequant_q2_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ2_KBytes, dst += kQK_K) {
    const uint8_t* scales = src;
    const uint8_t* qs = src + 16;
    const float d = read_f16(src + 80), dmin = read_f16(src + 82);
    for (int i = 0; i < kQK_K; ++i) {
      const int s = i / 16;
      const float dl = d * float(scales[s] & 0x0f), ml = dmin * float(scales[s] >> 4);
      const int q = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
      dst[i] = dl * float(q) - ml;
    }
  }
}

// Q3_K: 16 sub-blocks of 16 values with signed 6-bit scales packed in 12 bytes: the low 4 bits
// of scale s are nibble (s/8) of byte s%8, the high 2 bits are bits 2*(s/4).. of byte 8 + s%4;
// scale = that 6-bit code - 32. Value i: low 2 bits as in Q2_K; the high bit is bit i/32 of
// hmask[i%32], and a CLEAR high bit subtracts 4: q = low - 4 * (1 - hbit), x_i = (d*scale) * q.
void dequant_q3_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ3_KBytes, dst += kQK_K) {
    const uint8_t* hmask = src;
    const uint8_t* qs = src + 32;
    const uint8_t* sc = src + 96;
    const float d = read_f16(src + 108);
    for (int i = 0; i < kQK_K; ++i) {
      const int s = i / 16;
      const int lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0f;
      const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 0x03;
      const float dl = d * float((lo | hi << 4) - 32);
      const int low = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
      const int hbit = (hmask[i % 32] >> (i / 32)) & 1;
      dst[i] = dl * float(low - 4 * (1 - hbit));
    }
  }
}

// Q4_K: 8 sub-blocks of 32. Sub-block j's 4-bit codes are nibble (j%2) of qs[32*(j/2) + k];
// x = (d * sc_j) * q - (dmin * mn_j).
void dequant_q4_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ4_KBytes, dst += kQK_K) {
    const float d = read_f16(src), dmin = read_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qs = src + 16;
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      scale_min_k4(scales, j, sc, mn);
      const float d1 = d * float(sc), m1 = dmin * float(mn);
      for (int k = 0; k < 32; ++k) {
        const int q = (qs[32 * (j / 2) + k] >> (4 * (j % 2))) & 0x0f;
        dst[32 * j + k] = d1 * float(q) - m1;
      }
    }
  }
}

// Q5_K: as Q4_K with a 5th bit per value: bit j of qh[k] for value k of sub-block j.
void dequant_q5_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ5_KBytes, dst += kQK_K) {
    const float d = read_f16(src), dmin = read_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + 48;
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      scale_min_k4(scales, j, sc, mn);
      const float d1 = d * float(sc), m1 = dmin * float(mn);
      for (int k = 0; k < 32; ++k) {
        const int q = ((qs[32 * (j / 2) + k] >> (4 * (j % 2))) & 0x0f) | (((qh[k] >> j) & 1) << 4);
        dst[32 * j + k] = d1 * float(q) - m1;
      }
    }
  }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales. Value i (h = i/128, r = i%128): low 4 bits are
// nibble (r/64) of ql[64*h + r%64], high 2 bits are bits 2*(r/32) of qh[32*h + r%32];
// x_i = (d * scale[i/16]) * (q - 32).
void dequant_q6_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ6_KBytes, dst += kQK_K) {
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(src + 192);
    const float d = read_f16(src + 208);
    for (int i = 0; i < kQK_K; ++i) {
      const int h = i / 128, r = i % 128;
      const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
      dst[i] = (d * float(scales[i / 16])) * float((lo | hi << 4) - 32);
    }
  }
}

// Q8_K: x_i = d * q_i with a float32 d (bsums are a dot-product helper, unused here).
void dequant_q8_k_ref(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ8_KBytes, dst += kQK_K) {
    float d;
    std::memcpy(&d, src, 4);
    for (int i = 0; i < kQK_K; ++i) dst[i] = d * float(int8_t(src[4 + i]));
  }
}

}  // namespace aquakv::ggml
