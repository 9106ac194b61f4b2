// Unicode helpers for the tokenizer: the class table, UTF-8 and the byte-level alphabet.
#include "unicode.h"

#include <array>
#include <string>
#include <unordered_map>

namespace aquakv {
namespace {

constexpr uint32_t kMaxCp = 0x110000;

// The class and white-space flags of every code point, in two levels: blocks of 256 code points,
// each block stored once however often it repeats (most of the code space is a few uniform
// blocks). ~90 KB instead of a flat byte per code point (1.1 MB); built once.
constexpr uint32_t kBlock = 256;
struct FlagTable {
  std::vector<uint16_t> index;  // per block of code points: which stored block
  std::vector<uint8_t> blocks;  // the distinct blocks, kBlock flags each
};

const FlagTable& flag_table() {
  static const FlagTable table = [] {
    using namespace unicode_detail;  // ranges ascend from code point 0; white space ascends
    FlagTable t;
    t.index.resize(kMaxCp / kBlock);
    std::unordered_map<std::string, uint16_t> seen;
    std::string block(kBlock, '\0');
    uint32_t r = 0, w = 0;
    for (uint32_t b = 0; b < kMaxCp / kBlock; ++b) {
      for (uint32_t j = 0; j < kBlock; ++j) {
        const uint32_t cp = b * kBlock + j;
        while (r + 1 < kCategoryRangeCount && kCategoryRanges[r + 1].first <= cp) ++r;
        while (w < kWhiteSpaceCount && kWhiteSpace[w] < cp) ++w;
        uint8_t f = kCategoryRanges[r].cat;
        if (w < kWhiteSpaceCount && kWhiteSpace[w] == cp) f |= kUcWhiteSpace;
        block[j] = char(f);
      }
      const auto [it, added] = seen.try_emplace(block, uint16_t(seen.size()));
      if (added) t.blocks.insert(t.blocks.end(), block.begin(), block.end());
      t.index[b] = it->second;
    }
    return t;
  }();
  return table;
}

struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};  // every alphabet code point is < 0x100 + 68
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a = [] {
    ByteAlphabet r;
    r.to_byte.fill(-1);
    auto printable = [](int b) {
      return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      r.to_cp[b] = printable(b) ? uint32_t(b) : next++;
      r.to_byte[r.to_cp[b]] = int16_t(b);
    }
    return r;
  }();
  return a;
}

}  // namespace

uint8_t ucd_flags(uint32_t cp) {
  if (cp >= kMaxCp) return 0;
  const FlagTable& t = flag_table();
  return t.blocks[size_t(t.index[cp / kBlock]) * kBlock + cp % kBlock];
}

std::vector<uint32_t> utf8_to_cps(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      i += 1;
    } else if (b < 0xC0) {  // continuation byte where a lead byte belongs
      out.push_back(kReplacementChar);
      i += 1;
    } else if (b < 0xE0 && cont(i + 1)) {
      out.push_back((uint32_t(b & 0x1F) << 6) | (p[i + 1] & 0x3F));
      i += 2;
    } else if (b >= 0xE0 && b < 0xF0 && cont(i + 1) && cont(i + 2)) {
      out.push_back((uint32_t(b & 0x0F) << 12) | (uint32_t(p[i + 1] & 0x3F) << 6) |
                    (p[i + 2] & 0x3F));
      i += 3;
    } else if (b >= 0xF0 && b < 0xF8 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      const uint32_t cp = (uint32_t(b & 0x07) << 18) | (uint32_t(p[i + 1] & 0x3F) << 12) |
                          (uint32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
      out.push_back(cp < kMaxCp ? cp : kReplacementChar);
      i += 4;
    } else {
      out.push_back(kReplacementChar);
      i += 1;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

uint32_t byte_to_cp(uint8_t b) { return byte_alphabet().to_cp[b]; }

int cp_to_byte(uint32_t cp) {
  return cp < byte_alphabet().to_byte.size() ? byte_alphabet().to_byte[cp] : -1;
}

}  // namespace aquakv
