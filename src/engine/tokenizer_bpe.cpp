// Byte-level BPE ("gpt2" vocabularies): text -> code points -> pre-tokenizer words -> bytes
// spelled in the byte-level alphabet -> merges applied lowest rank first -> token ids.
//
// Merging works on interned symbol ids, never on strings: each word starts as one symbol per
// byte; a min-heap holds candidate adjacent pairs keyed by (merge rank, left position), and a
// popped pair is applied only if both sides are still the symbols it was made from. Each merge
// adds at most two candidates, so a word of n bytes costs O(n log n). Within one encode call
// the ids of each short word are cached, since natural text repeats its words.
#include <algorithm>

#include "aquakv/util/error.h"
#include "tokenizer_impl.h"
#include "unicode.h"

namespace aquakv {

void Tokenizer::Impl::build_bpe(const VocabSpec& spec) {
  bpe.pretok = std::make_unique<PreTokenizer>(spec.pre, spec.source);
  const int32_t n = int32_t(text.size());
  std::unordered_map<std::string, int32_t> extra;
  auto intern = [&](const std::string& s) -> int32_t {
    if (const int32_t id = to_id.find(s, text); id >= 0) return id;
    auto [it, added] = extra.try_emplace(s, n + int32_t(bpe.extra_text.size()));
    if (added) bpe.extra_text.push_back(s);
    return it->second;
  };
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, byte_to_cp(uint8_t(b)));
    bpe.byte_symbol[b] = intern(s);
  }
  if (spec.merges.empty()) {
    fail("{}: tokenizer.ggml.merges: a gpt2 vocabulary needs merges, found none", spec.source);
  }
  if (spec.merges.size() > size_t(INT32_MAX)) {
    fail("{}: tokenizer.ggml.merges: expected at most {} merges, got {}", spec.source, INT32_MAX,
         spec.merges.size());
  }
  bpe.merges.reserve(spec.merges.size());
  for (size_t i = 0; i < spec.merges.size(); ++i) {
    const std::string& m = spec.merges[i];
    const size_t sp = m.find(' ', 1);  // "left right"; the left part is never empty
    if (sp == std::string::npos) continue;  // malformed line: it can never apply
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    if (right.empty()) continue;
    const int32_t l = intern(left), r = intern(right);
    const int32_t res = intern(left + right);
    bpe.merges.insert(BpeTables::MergeTable::key(l, r), {int32_t(i), res});  // first rank wins
  }
  bpe.merges.shrink_to_fit();
  // A symbol that is not a token falls back to the tokens of its single bytes, if any.
  bpe.extra_fallback.resize(bpe.extra_text.size());
  for (size_t k = 0; k < bpe.extra_text.size(); ++k) {
    for (char c : bpe.extra_text[k]) {
      const TokenId id = lookup(std::string_view(&c, 1));
      if (id != kNoToken) bpe.extra_fallback[k].push_back(id);
    }
  }
}

namespace {

struct Sym {
  int32_t id;
  int32_t prev, next;  // neighbours in the word, -1 at the ends
  bool alive;
};

// A candidate merge of the adjacent symbols at positions left and right, made when they were
// left_id and right_id.
struct Cand {
  int32_t rank, left, right, left_id, right_id, result;
  bool operator<(const Cand& o) const {  // heap order: the max is the lowest rank, then the
    return rank != o.rank ? rank > o.rank : left > o.left;  // leftmost position
  }
};

}  // namespace

namespace {

struct Scratch {
  std::vector<Sym> syms;
  std::vector<Cand> heap;
};

// BPE of one pre-tokenizer word (its UTF-8 bytes), appending the token ids.
void merge_word(const BpeTables& bpe, int32_t n_vocab, std::string_view bytes,
                std::vector<TokenId>& out, Scratch& sc) {
  const int32_t m = int32_t(bytes.size());
  std::vector<Sym>& syms = sc.syms;
  std::vector<Cand>& heap = sc.heap;
  syms.resize(m);
  for (int32_t i = 0; i < m; ++i) {
    syms[i] = {bpe.byte_symbol[uint8_t(bytes[i])], i - 1, i + 1 < m ? i + 1 : -1, true};
  }
  heap.clear();
  auto consider = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const auto* mg = bpe.merges.find(BpeTables::MergeTable::key(syms[l].id, syms[r].id));
    if (mg == nullptr) return;
    heap.push_back({mg->rank, l, r, syms[l].id, syms[r].id, mg->result});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < m; ++i) consider(i, i + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Cand c = heap.back();
    heap.pop_back();
    Sym& L = syms[c.left];
    Sym& R = syms[c.right];
    // Stale when either side has since been merged into something else.
    if (!L.alive || !R.alive || L.id != c.left_id || R.id != c.right_id) continue;
    L.id = c.result;
    R.alive = false;
    L.next = R.next;
    if (R.next >= 0) syms[R.next].prev = c.left;
    consider(L.prev, c.left);
    consider(c.left, L.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const int32_t id = syms[i].id;
    if (id < n_vocab) {
      out.push_back(id);
    } else {
      const auto& fb = bpe.extra_fallback[id - n_vocab];
      out.insert(out.end(), fb.begin(), fb.end());
    }
  }
}

}  // namespace

void Tokenizer::Impl::encode_bpe(std::string_view s, std::vector<TokenId>& out) const {
  const std::vector<uint32_t> cps = utf8_to_cps(s);
  std::vector<uint32_t> ends;
  bpe.pretok->split(cps, ends);
  const int32_t n_vocab = int32_t(text.size());
  // Natural text repeats its words: remember the ids of each short word for this call.
  constexpr size_t kMaxCachedWord = 48;
  struct Span {
    uint32_t off, len;
  };
  std::unordered_map<std::string, Span, StringHash, std::equal_to<>> cache;
  std::vector<TokenId> cached_ids;

  std::string bytes, spelled;
  Scratch scratch;
  uint32_t start = 0;
  for (uint32_t end : ends) {
    bytes.clear();
    for (uint32_t i = start; i < end; ++i) append_utf8(bytes, cps[i]);
    start = end;
    if (bytes.empty()) continue;
    const bool cacheable = bytes.size() <= kMaxCachedWord;
    if (cacheable) {
      if (auto it = cache.find(bytes); it != cache.end()) {
        out.insert(out.end(), cached_ids.begin() + it->second.off,
                   cached_ids.begin() + it->second.off + it->second.len);
        continue;
      }
    }
    const size_t first = out.size();
    bool whole = false;
    if (bpe.pretok->ignore_merges()) {  // a word that is itself a token is taken whole
      spelled.clear();
      for (char c : bytes) append_utf8(spelled, byte_to_cp(uint8_t(c)));
      if (const TokenId id = lookup(spelled); id != kNoToken) {
        out.push_back(id);
        whole = true;
      }
    }
    if (!whole) merge_word(bpe, n_vocab, bytes, out, scratch);
    if (cacheable) {
      cache.emplace(bytes, Span{uint32_t(cached_ids.size()), uint32_t(out.size() - first)});
      cached_ids.insert(cached_ids.end(), out.begin() + first, out.end());
    }
  }
}

}  // namespace aquakv
