// Tests of quant/bitpack.h against an independent bit-by-bit definition of the stream layout.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "aquakv/quant/bitpack.h"

namespace aquakv {
namespace {

// Reference: bit b of code i is stream bit i*w + b, which is bit (pos % 8) of byte pos / 8.
std::vector<uint8_t> reference_pack(const std::vector<uint16_t>& codes, int w) {
  std::vector<uint8_t> out(size_t((codes.size() * w + 7) / 8), 0);
  for (size_t i = 0; i < codes.size(); ++i) {
    for (int b = 0; b < w; ++b) {
      if ((codes[i] >> b) & 1) {
        const size_t pos = i * size_t(w) + size_t(b);
        out[pos / 8] |= uint8_t(1u << (pos % 8));
      }
    }
  }
  return out;
}

TEST(Bitpack, MatchesReferenceForEveryWidthAndLength) {
  std::mt19937 rng(7);
  for (int w = 1; w <= 16; ++w) {
    for (int64_t n : {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 96, 191, 1000}) {
      std::vector<uint16_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = uint16_t(rng() & ((1u << w) - 1));
      const auto want = reference_pack(codes, w);
      ASSERT_EQ(packed_bytes(n, w), int64_t(want.size()));
      // Poison the output to prove every byte (including the tail padding) is written.
      std::vector<uint8_t> got(want.size() + 1, 0xAB);
      pack_bits(codes.data(), n, w, got.data());
      ASSERT_EQ(std::vector<uint8_t>(got.begin(), got.end() - 1), want) << "w=" << w << " n=" << n;
      ASSERT_EQ(got.back(), 0xAB) << "wrote past the end, w=" << w << " n=" << n;
      std::vector<uint16_t> back(static_cast<size_t>(n) + 1, 0xFFFF);
      unpack_bits(got.data(), n, w, back.data());
      ASSERT_EQ(std::vector<uint16_t>(back.begin(), back.end() - 1), codes) << "w=" << w << " n=" << n;
      ASSERT_EQ(back.back(), 0xFFFF);
    }
  }
}

// unpack_bits_float reads the reference stream (reference_pack) as floats, for every width up to
// 8 and lengths that end mid-byte.
TEST(Bitpack, FloatUnpackMatchesReference) {
  std::mt19937 rng(7);
  for (int w = 1; w <= 8; ++w) {
    for (const int64_t n : {1, 3, 7, 8, 9, 64, 191, 192}) {
      std::vector<uint16_t> codes(static_cast<size_t>(n));
      for (auto& c : codes) c = uint16_t(rng() & ((1u << w) - 1));
      const auto packed = reference_pack(codes, w);
      std::vector<float> got(static_cast<size_t>(n) + 1, -1.0f);
      unpack_bits_float(packed.data(), n, w, got.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], float(codes[size_t(i)])) << "w=" << w << " n=" << n << " i=" << i;
      ASSERT_EQ(got.back(), -1.0f);
    }
  }
}

TEST(Bitpack, IgnoresBitsAboveWidth) {
  const std::vector<uint16_t> codes = {0xFFFF, 0x0002, 0xFFF1};
  std::vector<uint8_t> out(size_t(packed_bytes(3, 3)));
  pack_bits(codes.data(), 3, 3, out.data());
  std::vector<uint16_t> back(3);
  unpack_bits(out.data(), 3, 3, back.data());
  EXPECT_EQ(back, (std::vector<uint16_t>{7, 2, 1}));
}

TEST(Bitpack, BitsForCount) {
  EXPECT_EQ(bits_for_count(2), 1);
  EXPECT_EQ(bits_for_count(16), 4);
  EXPECT_EQ(bits_for_count(17), 5);
  EXPECT_EQ(bits_for_count(4096), 12);
  EXPECT_EQ(bits_for_count(65536), 16);
}

}  // namespace
}  // namespace aquakv
