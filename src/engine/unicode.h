// Unicode helpers private to the tokenizer. Owns: code point classes (general category and
// White_Space, generated table in unicode_data.cpp), lenient UTF-8 decoding/encoding, and the
// byte-level (GPT-2) byte <-> code point map. Not: tokenization itself (tokenizer*.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aquakv {

// General-category class of a code point, the granularity the pre-tokenizer regexes use
// (\p{N}, \p{L}, \p{Z}, \p{M}, \p{P}, \p{S}, \p{C}); Undefined is an unassigned code point.
enum class UCat : uint8_t {
  Undefined = 0, Number = 1, Letter = 2, Separator = 3, Mark = 4, Punct = 5, Symbol = 6,
  Control = 7,
};

// One byte per code point: low 3 bits the UCat, bit 3 the White_Space property.
inline constexpr uint8_t kUcWhiteSpace = 8;
uint8_t ucd_flags(uint32_t cp);  // code points past U+10FFFF are Undefined
inline UCat ucd_cat(uint32_t cp) { return UCat(ucd_flags(cp) & 7); }
inline bool ucd_is_space(uint32_t cp) { return (ucd_flags(cp) & kUcWhiteSpace) != 0; }

inline constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes UTF-8 leniently, one code point per step: a malformed sequence (bad lead byte,
// missing continuation byte, truncated at the end) yields U+FFFD and consumes one byte.
// Overlong forms and surrogates are decoded as written (no validation beyond the byte shape);
// values above U+10FFFF become U+FFFD. This is the decoder text goes through before byte-level
// BPE, so invalid input bytes are tokenized as U+FFFD.
std::vector<uint32_t> utf8_to_cps(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);  // cp <= 0x10FFFF

// Length of the UTF-8 sequence a lead byte announces (1 for continuation/ASCII bytes).
inline int utf8_seq_len(uint8_t lead) {
  return lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Byte-level BPE alphabet: every byte is spelled as one printable code point (GPT-2 scheme:
// printable Latin-1 bytes map to themselves, the 68 others to U+0100.. in byte order).
uint32_t byte_to_cp(uint8_t b);
int cp_to_byte(uint32_t cp);  // -1 when cp is not in the alphabet

namespace unicode_detail {
struct UcdRange {
  uint32_t first;
  uint8_t cat;
};
extern const uint32_t kCategoryRangeCount;
extern const UcdRange kCategoryRanges[];
extern const uint32_t kWhiteSpaceCount;
extern const uint32_t kWhiteSpace[];
}  // namespace unicode_detail

}  // namespace aquakv
