// Bit packing through a 64-bit accumulator: codes are appended at the top of the filled bits and
// whole bytes are flushed from the bottom, which is exactly the little-endian bit stream of
// bitpack.h. Byte-aligned widths (8, 16) and 4 take direct paths; unpacking widths below 8 takes
// 8 codes per W bytes at a time.
#include "aquakv/quant/bitpack.h"
#include "aquakv/util/check.h"

#include <cstring>
#include <vector>

namespace aquakv {
namespace {

// Widths below 8: every 8 codes fill exactly W bytes, so each group of W bytes is one 64-bit
// word from which 8 codes are shifted out (constant shifts once W is a template argument).
// Returns the codes done (a multiple of 8).
template <int W>
int64_t unpack_groups(const uint8_t* in, int64_t n, uint16_t* codes) {
  constexpr uint64_t mask = (uint64_t(1) << W) - 1;
  const int64_t groups = n / 8;
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t w = 0;
    std::memcpy(&w, in + g * W, W);  // little-endian hosts
    for (int k = 0; k < 8; ++k) codes[8 * g + k] = uint16_t((w >> (k * W)) & mask);
  }
  return groups * 8;
}

}  // namespace

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
  const int64_t nbytes = packed_bytes(n, width);
  int64_t i0 = 0;
  switch (width) {
    case 1: i0 = unpack_groups<1>(in, n, codes); break;
    case 2: i0 = unpack_groups<2>(in, n, codes); break;
    case 3: i0 = unpack_groups<3>(in, n, codes); break;
    case 5: i0 = unpack_groups<5>(in, n, codes); break;
    case 6: i0 = unpack_groups<6>(in, n, codes); break;
    case 7: i0 = unpack_groups<7>(in, n, codes); break;
    default: break;
  }
  // Codes whose 32-bit window [bit/8, bit/8 + 4) lies inside the stream: one unaligned load each.
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

namespace {

// Per byte value, its 8/width codes as floats, in stream order.
template <int W>
struct ByteCodeTable {
  static constexpr int kPer = 8 / W;
  float v[256][kPer];
  ByteCodeTable() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < kPer; ++k) v[b][k] = float((b >> (k * W)) & ((1 << W) - 1));
  }
};

template <int W>
void unpack_float_bytes(const uint8_t* in, int64_t n, float* x) {
  static const ByteCodeTable<W> table;
  constexpr int per = ByteCodeTable<W>::kPer;
  const int64_t whole = n / per;
  for (int64_t b = 0; b < whole; ++b) std::memcpy(x + b * per, table.v[in[b]], sizeof(float) * per);
  for (int64_t i = whole * per; i < n; ++i) x[i] = table.v[in[whole]][i - whole * per];
}

}  // namespace

void unpack_bits_float(const uint8_t* in, int64_t n, int width, float* x) {
  switch (width) {
    case 2: return unpack_float_bytes<2>(in, n, x);
    case 4: return unpack_float_bytes<4>(in, n, x);
    case 8: for (int64_t i = 0; i < n; ++i) x[i] = float(in[i]); return;
    default: break;
  }
  thread_local std::vector<uint16_t> codes;
  codes.resize(size_t(n));
  unpack_bits(in, n, width, codes.data());
  for (int64_t i = 0; i < n; ++i) x[i] = float(codes[size_t(i)]);
}

}  // namespace aquakv
