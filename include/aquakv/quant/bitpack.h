// Exact bit packing of integer codes. Owns: the on-disk/in-cache layout of packed codes -- code i
// of width w occupies bits [i*w, (i+1)*w) of a little-endian bit stream (bit j of the stream is
// bit j%8 of byte j/8), so a w-bit code takes exactly w bits and the stream takes
// ceil(n*w/8) bytes; unused high bits of the last byte are zero. Not: what the codes mean.
#pragma once

#include <cstdint>

namespace aquakv {

inline constexpr int kMaxPackWidth = 16;

// Bytes needed for n codes of `width` bits (1..16).
inline int64_t packed_bytes(int64_t n, int width) { return (n * width + 7) / 8; }

// Writes n codes (each < 2^width) into packed_bytes(n, width) bytes at out. Bits of a code above
// `width` are ignored (masked).
void pack_bits(const uint16_t* codes, int64_t n, int width, uint8_t* out);

// Reads n codes of `width` bits from in (packed_bytes(n, width) bytes).
void unpack_bits(const uint8_t* in, int64_t n, int width, uint16_t* codes);

// The same codes as floats (x[i] = code i), for decoders that scale codes next: widths 2, 4 and
// 8 go through 256-entry byte tables (one table read per byte), others through unpack_bits.
void unpack_bits_float(const uint8_t* in, int64_t n, int width, float* x);

// Number of bits needed to index n distinct values: ceil(log2(n)), 0 for n == 1.
inline int bits_for_count(int64_t n) {
  int b = 0;
  while ((int64_t(1) << b) < n) ++b;
  return b;
}

}  // namespace aquakv
