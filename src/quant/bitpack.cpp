// Bit packing through a 64-bit accumulator: codes are appended at the top of the filled bits and
// whole bytes are flushed from the bottom, which is exactly the little-endian bit stream of
// bitpack.h. Byte-aligned widths (8, 16) and the common 2/4-bit widths take direct paths.
#include "aquakv/quant/bitpack.h"
#include "aquakv/util/check.h"

#include <cstring>

namespace aquakv {

void pack_bits(const uint16_t* codes, int64_t n, int width, uint8_t* out) {
  AQUAKV_CHECK(width >= 1 && width <= kMaxPackWidth);
  const uint32_t mask = (uint32_t(1) << width) - 1;
  if (width == 8) {
    for (int64_t i = 0; i < n; ++i) out[i] = uint8_t(codes[i]);
    return;
  }
  if (width == 16) {
    for (int64_t i = 0; i < n; ++i) {
      out[2 * i] = uint8_t(codes[i]);
      out[2 * i + 1] = uint8_t(codes[i] >> 8);
    }
    return;
  }
  if (width == 4) {
    int64_t i = 0;
    for (; i + 1 < n; i += 2) out[i / 2] = uint8_t((codes[i] & 15u) | ((codes[i + 1] & 15u) << 4));
    if (i < n) out[i / 2] = uint8_t(codes[i] & 15u);
    return;
  }
  uint64_t acc = 0;
  int filled = 0;
  int64_t o = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc |= uint64_t(codes[i] & mask) << filled;
    filled += width;
    while (filled >= 8) {
      out[o++] = uint8_t(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) out[o++] = uint8_t(acc);
  AQUAKV_CHECK(o == packed_bytes(n, width));
}

void unpack_bits(const uint8_t* in, int64_t n, int width, uint16_t* codes) {
  AQUAKV_CHECK(width >= 1 && width <= kMaxPackWidth);
  const uint32_t mask = (uint32_t(1) << width) - 1;
  if (width == 8) {
    for (int64_t i = 0; i < n; ++i) codes[i] = in[i];
    return;
  }
  if (width == 16) {
    for (int64_t i = 0; i < n; ++i) codes[i] = uint16_t(in[2 * i] | (in[2 * i + 1] << 8));
    return;
  }
  if (width == 4) {
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
      codes[i] = in[i / 2] & 15u;
      codes[i + 1] = in[i / 2] >> 4;
    }
    if (i < n) codes[i] = in[i / 2] & 15u;
    return;
  }
  if (width == 2) {
    for (int64_t i = 0; i < n; ++i) codes[i] = (in[i / 4] >> (2 * (i % 4))) & 3u;
    return;
  }
  const int64_t nbytes = packed_bytes(n, width);
  // Codes whose 32-bit window [bit/8, bit/8 + 4) lies inside the stream: one unaligned load each.
  int64_t i0 = 0;
  for (; i0 < n; ++i0) {
    const int64_t bit = i0 * width;
    if (bit / 8 + 4 > nbytes) break;
    uint32_t w;
    std::memcpy(&w, in + bit / 8, 4);  // little-endian hosts
    codes[i0] = uint16_t((w >> (bit % 8)) & mask);
  }
  if (i0 == n) return;
  // The tail: the byte-wise accumulator, starting at the first byte of code i0.
  uint64_t acc = 0;
  int filled = 0;
  int64_t p = (i0 * width) / 8;
  const int skip = int((i0 * width) % 8);
  if (skip) {
    acc = uint64_t(in[p++]) >> skip;
    filled = 8 - skip;
  }
  for (int64_t i = i0; i < n; ++i) {
    while (filled < width && p < nbytes) {
      acc |= uint64_t(in[p++]) << filled;
      filled += 8;
    }
    codes[i] = uint16_t(acc & mask);
    acc >>= width;
    filled -= width;
  }
}

}  // namespace aquakv
