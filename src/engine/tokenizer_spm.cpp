// SentencePiece-style BPE ("llama" vocabularies). The text (spaces already spelled "▁") is
// split into UTF-8 characters; adjacent pairs whose concatenation is a vocabulary string are
// merged, highest token score first (ties: leftmost), until no pair is in the vocabulary. A
// leftover character that is not a token is emitted as its bytes' <0xXX> tokens (byte
// fallback). The same heap-of-candidates scheme as byte-level BPE keeps it O(n log n).
#include <algorithm>

#include "tokenizer_impl.h"
#include "unicode.h"

namespace aquakv {

void Tokenizer::Impl::build_spm() {
  static const char* const hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
    TokenId id = lookup(name);
    if (id == kNoToken) id = lookup(std::string_view(reinterpret_cast<const char*>(&b), 1));
    spm_byte_token[b] = id;
  }
}

namespace {

struct Piece {
  uint32_t off, len;  // bytes of the text this symbol covers
  int32_t prev, next;
};

struct Cand {
  float score;
  int32_t left, right;
  uint32_t len;  // left.len + right.len when made; a later mismatch means it is stale
  bool operator<(const Cand& o) const {  // heap order: highest score, then leftmost
    return score != o.score ? score < o.score : left > o.left;
  }
};

}  // namespace

void Tokenizer::Impl::encode_spm(std::string_view s, std::vector<TokenId>& out) const {
  std::vector<Piece> sym;
  for (uint32_t off = 0; off < s.size();) {
    const uint32_t len =
        std::min<uint32_t>(uint32_t(utf8_seq_len(uint8_t(s[off]))), uint32_t(s.size()) - off);
    const int32_t i = int32_t(sym.size());
    sym.push_back({off, len, i - 1, off + len < s.size() ? i + 1 : -1});
    off += len;
  }
  if (sym.empty()) return;
  std::vector<Cand> heap;
  auto consider = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t len = sym[l].len + sym[r].len;
    const TokenId id = lookup(s.substr(sym[l].off, len));
    if (id == kNoToken) return;
    heap.push_back({score[id], l, r, len});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) consider(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Cand c = heap.back();
    heap.pop_back();
    Piece& L = sym[c.left];
    Piece& R = sym[c.right];
    if (L.len == 0 || R.len == 0 || L.len + R.len != c.len) continue;
    L.len += R.len;
    R.len = 0;
    L.next = R.next;
    if (R.next >= 0) sym[R.next].prev = c.left;
    consider(L.prev, c.left);
    consider(c.left, L.next);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const std::string_view p = s.substr(sym[i].off, sym[i].len);
    if (const TokenId id = lookup(p); id != kNoToken) {
      out.push_back(id);
      continue;
    }
    for (char c : p) {  // byte fallback; a vocabulary without byte tokens gets <unk>
      const TokenId b = spm_byte_token[uint8_t(c)];
      if (b != kNoToken) out.push_back(b);
      else if (unk != kNoToken) out.push_back(unk);
    }
  }
}

}  // namespace aquakv
