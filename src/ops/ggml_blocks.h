// Private to src/ops: byte layouts of the ggml block formats (sizes and field offsets) and
// little-endian field readers. Blocks in a file are not aligned, so fields are read with memcpy.
#pragma once

#include <cstdint>
#include <cstring>

#include "aquakv/util/fp16.h"

namespace aquakv::ggml {

inline constexpr int64_t kQK = 32;    // values per block of the 32-value formats
inline constexpr int64_t kQK_K = 256; // values per K-quant super-block

// Byte sizes of one block (layouts as comments: field(bytes) in storage order).
inline constexpr int64_t kQ4_0Bytes = 18;   // d(2) qs(16): q_i = nibble, low nibbles first
inline constexpr int64_t kQ4_1Bytes = 20;   // d(2) m(2) qs(16)
inline constexpr int64_t kQ5_0Bytes = 22;   // d(2) qh(4) qs(16): bit i of qh = 5th bit of q_i
inline constexpr int64_t kQ5_1Bytes = 24;   // d(2) m(2) qh(4) qs(16)
inline constexpr int64_t kQ8_0Bytes = 34;   // d(2) qs(32 x int8)
inline constexpr int64_t kQ8_1Bytes = 36;   // d(2) s(2) qs(32 x int8)
inline constexpr int64_t kQ2_KBytes = 84;   // scales(16) qs(64) d(2) dmin(2)
inline constexpr int64_t kQ3_KBytes = 110;  // hmask(32) qs(64) scales(12) d(2)
inline constexpr int64_t kQ4_KBytes = 144;  // d(2) dmin(2) scales(12) qs(128)
inline constexpr int64_t kQ5_KBytes = 176;  // d(2) dmin(2) scales(12) qh(32) qs(128)
inline constexpr int64_t kQ6_KBytes = 210;  // ql(128) qh(64) scales(16 x int8) d(2)
inline constexpr int64_t kQ8_KBytes = 292;  // d(4, f32) qs(256 x int8) bsums(16 x int16)

inline float read_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}
inline void write_f16(uint8_t* p, float f) {
  const uint16_t h = fp32_to_fp16(f);
  std::memcpy(p, &h, 2);
}
inline uint32_t read_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K/Q5_K scale and min codes: 8 sub-blocks, 6 bits each, packed in 12 bytes. For j < 4:
// sc = s[j] & 63, mn = s[j+4] & 63; for j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4,
// mn = (s[j+4] >> 4) | (s[j] >> 6) << 4.
inline void scale_min_k4(const uint8_t* s, int j, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

}  // namespace aquakv::ggml
