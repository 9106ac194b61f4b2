// Internal state of Tokenizer (private to src/engine/tokenizer*.cpp). Owns: the vocabulary
// tables built from a VocabSpec and the per-algorithm encoders. Not: the public API
// (include/aquakv/engine/tokenizer.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/error.h"
#include "pretokenizer.h"

namespace aquakv {

// Byte-level BPE tables. Symbols are interned strings: a vocabulary string's symbol id is its
// token id; strings that only occur in merges get ids from n_vocab upwards.
struct BpeTables {
  struct Merge {
    int32_t rank;    // index in tokenizer.ggml.merges: lower merges first
    int32_t result;  // symbol id of left + right
  };
  // (left symbol, right symbol) -> Merge, open addressing with linear probing: the lookup of
  // every adjacent pair is the hot loop of encoding, and a flat table keeps it to ~2 cache
  // misses. The slots hold 4-byte indices into the merges, kept once in insertion order, so
  // the table is 4 bytes per slot at load factor <= 1/2 plus 16 per merge (SmolLM2's 48,900
  // merges: 1.25 MiB instead of 2 MiB with the merges in the slots).
  class MergeTable {
   public:
    static uint64_t key(int32_t l, int32_t r) {
      return (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
    }
    void reserve(size_t n) {
      int bits = 4;
      while ((size_t(1) << bits) < 2 * n) ++bits;
      shift_ = 64 - bits;
      slots_.assign(size_t(1) << bits, kEmpty);
      entries_.clear();
      entries_.reserve(n);
    }
    // Inserts unless the key is present (the first merge of a pair wins); at most the reserved
    // count of merges.
    void insert(uint64_t k, Merge m) {
      for (size_t i = slot(k);; i = (i + 1) & (slots_.size() - 1)) {
        if (slots_[i] == kEmpty) {
          slots_[i] = int32_t(entries_.size());
          entries_.push_back({k, m});
          return;
        }
        if (entries_[size_t(slots_[i])].key == k) return;
      }
    }
    // Frees the room reserved for merges that were skipped or repeated.
    void shrink_to_fit() { entries_.shrink_to_fit(); }
    const Merge* find(uint64_t k) const {
      for (size_t i = slot(k);; i = (i + 1) & (slots_.size() - 1)) {
        if (slots_[i] == kEmpty) return nullptr;
        const Entry& e = entries_[size_t(slots_[i])];
        if (e.key == k) return &e.m;
      }
    }

   private:
    static constexpr int32_t kEmpty = -1;
    struct Entry {
      uint64_t key;
      Merge m;
    };
    size_t slot(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> shift_); }
    std::vector<int32_t> slots_;   // index into entries_, or kEmpty
    std::vector<Entry> entries_;  // in insertion order
    int shift_ = 60;
  };
  std::unique_ptr<PreTokenizer> pretok;
  MergeTable merges;
  std::array<int32_t, 256> byte_symbol{};      // symbol of each byte's byte-level code point
  std::vector<std::string> extra_text;         // text of symbols >= n_vocab (a few hundred)
  // For a symbol that is not a token: the tokens of its single bytes that exist.
  std::vector<std::vector<TokenId>> extra_fallback;
};

// Hash for string keys that also accepts string_views (lookups without a temporary string).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// n strings in one buffer: string i is bytes [off[i], off[i + 1]) of `bytes`. A vocabulary's
// texts and pieces are short (SmolLM2's texts: 7.5 bytes on average), so a std::string each
// costs 32 bytes for the object alone; pooled, SmolLM2's 49,152 texts or pieces take ~0.55 MiB
// instead of 1.5 (or more where a string outgrows its inline storage).
class StringTable {
 public:
  // Appends s as string size(); `what` names the table in the error when the pool would pass
  // 4 GiB (offsets are 32-bit).
  void push_back(std::string_view s, const char* what) {
    if (s.size() > size_t(UINT32_MAX) - bytes_.size()) fail("tokenizer: {} exceed 4 GiB", what);
    bytes_.append(s);
    off_.push_back(uint32_t(bytes_.size()));
  }
  void reserve(size_t n, size_t total_bytes) {
    off_.reserve(n + 1);
    bytes_.reserve(total_bytes);
  }
  void shrink_to_fit() {
    off_.shrink_to_fit();
    bytes_.shrink_to_fit();
  }
  std::string_view operator[](size_t i) const { return {bytes_.data() + off_[i], off_[i + 1] - off_[i]}; }
  size_t size() const { return off_.size() - 1; }

 private:
  std::string bytes_;
  std::vector<uint32_t> off_{0};
};

// Token text -> id: open addressing over the ids, probing linearly from the text's hash; the
// texts themselves stay in Impl::text. 4 bytes per slot at load factor <= 1/2 (~0.5 MiB for a
// 50k vocabulary, against ~3.5 MiB for a node-based map of copied strings).
class TokenIndex {
 public:
  // Indexes texts[0..n); a repeated text maps to its last id.
  void build(const StringTable& texts) {
    size_t cap = 16;
    while (cap < 2 * texts.size()) cap *= 2;
    slots_.assign(cap, -1);
    for (size_t i = 0; i < texts.size(); ++i) slots_[probe(texts[i], texts)] = int32_t(i);
  }
  // The id of `s` among the texts the index was built over, or -1.
  int32_t find(std::string_view s, const StringTable& texts) const {
    return slots_.empty() ? -1 : slots_[probe(s, texts)];
  }

 private:
  // The slot holding s, or the empty slot where it would go.
  size_t probe(std::string_view s, const StringTable& texts) const {
    const size_t mask = slots_.size() - 1;
    size_t i = std::hash<std::string_view>{}(s) & mask;
    while (slots_[i] >= 0 && texts[size_t(slots_[i])] != s) i = (i + 1) & mask;
    return i;
  }
  std::vector<int32_t> slots_;
};

struct Tokenizer::Impl {
  enum class Kind { Bpe, Spm };
  Kind kind = Kind::Bpe;
  std::string model, pre, source;
  StringTable text;  // the vocabulary strings, id = index
  std::vector<float> score;
  std::vector<TokenType> type;
  TokenIndex to_id;  // over `text` (which must not change once built)
  TokenId bos = kNoToken, eos = kNoToken, unk = kNoToken, eot = kNoToken, eom = kNoToken;
  bool add_bos = false, add_eos = false, add_space_prefix = false, clean_spaces = false;
  std::vector<TokenId> specials;  // control, user-defined and unknown tokens, longest first
  StringTable pieces;  // piece(id, special = true)
  std::unordered_set<TokenId> eog;
  BpeTables bpe;
  std::array<TokenId, 256> spm_byte_token{};  // <0xXX> token (or the 1-byte string) per byte

  TokenId lookup(std::string_view s) const {
    const int32_t id = to_id.find(s, text);
    return id < 0 ? kNoToken : TokenId(id);
  }
  void build_bpe(const VocabSpec& spec);
  void build_spm();
  // Encode one stretch of plain text (no special tokens in it), appending ids.
  void encode_bpe(std::string_view text, std::vector<TokenId>& out) const;
  void encode_spm(std::string_view text, std::vector<TokenId>& out) const;
};

}  // namespace aquakv
