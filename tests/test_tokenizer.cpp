// Tests of engine/tokenizer: ids, pieces and decodes identical to llama.cpp's tokenizer
// (goldens from scripts/make_tokenizer_goldens.py) for the default model's byte-level BPE
// vocabulary (AQUAKV_MODEL; also run with nine other pre-tokenizers), for Gemma 3's
// SentencePiece vocabulary (AQUAKV_GEMMA_MODEL) and for a committed SentencePiece-style vocabulary; round trips; special tokens; hand-checked small vocabularies.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aquakv/engine/gguf.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

using nlohmann::json;

const std::string kData = std::string(AQUAKV_TEST_DATA) + "/tokenizer/";

json load_json(const std::string& name) {
  std::ifstream f(kData + name);
  if (!f) throw std::runtime_error("cannot open " + kData + name);
  return json::parse(f);
}

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(char(std::stoi(h.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// {"text": ..} or {"hex": ..}
std::string text_of(const json& j) {
  return j.contains("hex") ? from_hex(j["hex"].get<std::string>()) : j["text"].get<std::string>();
}

// base64 of unsigned LEB128 varints -> ids
std::vector<TokenId> unpack_ids(const std::string& b64) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<uint8_t> bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : b64) {
    const int v = val(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(uint8_t(acc >> bits));
    }
  }
  std::vector<TokenId> ids;
  uint64_t v = 0;
  int shift = 0;
  for (uint8_t b : bytes) {
    v |= uint64_t(b & 0x7F) << shift;
    shift += 7;
    if (!(b & 0x80)) {
      ids.push_back(TokenId(v));
      v = 0;
      shift = 0;
    }
  }
  return ids;
}

std::string show(const std::vector<TokenId>& ids, size_t around) {
  std::ostringstream s;
  const size_t a = around > 4 ? around - 4 : 0;
  for (size_t i = a; i < ids.size() && i < around + 5; ++i) {
    s << (i == around ? "[" : "") << ids[i] << (i == around ? "] " : " ");
  }
  return s.str();
}

// JSON-quoted start of a byte string (malformed UTF-8 shown as U+FFFD).
std::string printable(const std::string& s) {
  return json(s.substr(0, 200)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Compares encode() with every golden case; returns the number of mismatches (first few shown).
int check_cases(const Tokenizer& tok, const json& corpus, const json& cases,
                const std::string& what) {
  int bad = 0;
  for (const auto& c : cases) {
    const size_t idx = c[0].get<size_t>();
    const int flags = c[1].get<int>();
    const std::string text = text_of(corpus[idx]);
    const std::vector<TokenId> want = unpack_ids(c[2].get<std::string>());
    const std::vector<TokenId> got = tok.encode(text, flags & 1, flags & 2);
    if (got != want) {
      size_t k = 0;
      while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
      if (++bad <= 5) {
        ADD_FAILURE() << what << ": piece " << idx << " (" << corpus[idx]["kind"] << ", flags "
                      << flags << ", " << text.size() << " bytes) differs at id " << k
                      << "\n  want: " << show(want, k) << "\n  got:  " << show(got, k)
                      << "\n  text: " << printable(text);
      }
    }
  }
  return bad;
}

int check_decodes(const Tokenizer& tok, const json& corpus, const json& cases,
                  const json& decodes, const std::string& what) {
  int bad = 0;
  for (const auto& d : decodes) {
    const auto ids = unpack_ids(cases[d[0].get<size_t>()][2].get<std::string>());
    const int flags = d[1].get<int>();
    const std::string want = text_of(d[2]);
    const std::string got = tok.decode(ids, flags & 1, flags & 2);
    if (got != want && ++bad <= 5) {
      ADD_FAILURE() << what << ": decode of case " << d[0] << " flags " << flags
                    << "\n  want: " << printable(want) << "\n  got:  " << printable(got);
    }
  }
  return bad;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = uint8_t(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? b : b & (0x7F >> n);
    for (int k = 1; k < n; ++k) {
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) {
      return false;
    }
    i += n;
  }
  return true;
}

uint64_t fnv1a64_pieces(const Tokenizer& tok, bool special) {
  uint64_t h = 0xCBF29CE484222325ull;
  auto feed = [&](const void* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001B3ull;
  };
  for (TokenId t = 0; t < tok.n_vocab(); ++t) {
    const std::string_view p = tok.piece(t, special);
    const uint32_t len = uint32_t(p.size());
    const uint8_t le[4] = {uint8_t(len), uint8_t(len >> 8), uint8_t(len >> 16),
                           uint8_t(len >> 24)};
    feed(le, 4);
    feed(p.data(), p.size());
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Default model (byte-level BPE, pre-tokenizer "smollm")

class ModelTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') return;
    file_ = GgufFile::open(m).release();
    tok_ = new Tokenizer(Tokenizer::from_gguf(*file_));
    corpus_ = new json(load_json("corpus.json")["pieces"]);
    gold_ = new json(load_json("smollm2_goldens.json"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete file_;
    delete corpus_;
    delete gold_;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << "AQUAKV_MODEL is not set";
  }
  static inline GgufFile* file_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline json* corpus_ = nullptr;
  static inline json* gold_ = nullptr;
};

// from_gguf dropped the resident pages of the file's metadata (GgufFile::release_metadata_pages)
// once its tables were built: reading the vocabulary arrays again maps them in again, unchanged.
TEST_F(ModelTokenizer, ArraysReadAgainAfterTheirPagesAreReleased) {
  const Tokenizer again = Tokenizer::from_gguf(*file_);
  file_->release_metadata_pages();  // a second release is harmless too
  const Tokenizer third = Tokenizer::from_gguf(*file_);
  ASSERT_EQ(again.n_vocab(), tok_->n_vocab());
  ASSERT_EQ(third.n_vocab(), tok_->n_vocab());
  for (TokenId t = 0; t < TokenId(tok_->n_vocab()); ++t) {
    ASSERT_EQ(again.token_text(t), tok_->token_text(t)) << t;
    ASSERT_EQ(third.piece(t, true), tok_->piece(t, true)) << t;
  }
  const std::string text = "Memory that matches the promise: tokenizer tables, read twice.";
  EXPECT_EQ(third.encode(text), tok_->encode(text));
}

TEST_F(ModelTokenizer, VocabularyAsExpected) {
  EXPECT_EQ(tok_->n_vocab(), (*gold_)["n_vocab"].get<int64_t>());
  EXPECT_EQ(tok_->model(), "gpt2");
  EXPECT_EQ(tok_->pre(), "smollm");
  EXPECT_EQ(tok_->bos(), 1);
  EXPECT_EQ(tok_->eos(), 2);
  EXPECT_FALSE(tok_->add_bos());
  EXPECT_TRUE(tok_->is_eog(2));  // <|im_end|>
  EXPECT_TRUE(tok_->is_eog(0));  // <|endoftext|>
  EXPECT_FALSE(tok_->is_eog(1));
}

TEST_F(ModelTokenizer, IdsMatchLlamaCppOnCorpus) {
  size_t bytes = 0;
  for (const auto& c : *corpus_) bytes += text_of(c).size();
  EXPECT_GE(bytes, 100000u);
  EXPECT_EQ(check_cases(*tok_, *corpus_, (*gold_)["cases"], "smollm"), 0);
}

TEST_F(ModelTokenizer, OtherPreTokenizersMatchLlamaCpp) {
  const VocabSpec base = Tokenizer::spec_from_gguf(*file_);
  for (const auto& [pre, cases] : (*gold_)["pre_variants"].items()) {
    VocabSpec spec = base;
    spec.pre = pre;
    const Tokenizer t(spec);
    EXPECT_EQ(check_cases(t, *corpus_, cases, "pre " + pre), 0) << pre;
  }
}

TEST_F(ModelTokenizer, PiecesMatchLlamaCpp) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64_pieces(*tok_, true));
  EXPECT_EQ(std::string(buf), (*gold_)["pieces_fnv1a64"]["special"].get<std::string>());
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64_pieces(*tok_, false));
  EXPECT_EQ(std::string(buf), (*gold_)["pieces_fnv1a64"]["plain"].get<std::string>());
  for (const auto& s : (*gold_)["sample_pieces"]) {
    const TokenId id = s[0].get<TokenId>();
    EXPECT_EQ(tok_->piece(id, false), from_hex(s[1].get<std::string>())) << id;
    EXPECT_EQ(tok_->piece(id, true), from_hex(s[2].get<std::string>())) << id;
  }
}

TEST_F(ModelTokenizer, DecodeMatchesLlamaCpp) {
  EXPECT_EQ(check_decodes(*tok_, *corpus_, (*gold_)["cases"], (*gold_)["decode_cases"], "smollm"),
            0);
}

TEST_F(ModelTokenizer, RoundTripsValidUtf8) {
  int n = 0;
  for (const auto& c : *corpus_) {
    const std::string text = text_of(c);
    if (!valid_utf8(text)) continue;
    ++n;
    EXPECT_EQ(tok_->decode(tok_->encode(text, false, false)), text) << printable(text);
    // With special parsing the special tokens come back when rendered.
    EXPECT_EQ(tok_->decode(tok_->encode(text, true, true), false, true), text);
  }
  EXPECT_GT(n, 800);
}

TEST_F(ModelTokenizer, SpecialTokens) {
  const std::string chat = "<|im_start|>user\nHi<|im_end|>\n";
  const auto ids = tok_->encode(chat, true, true);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tok_->encode("<|im_start|>", false, true), std::vector<TokenId>{1});
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 2), 1);
  // Without parse_special the marker is plain text.
  const auto plain = tok_->encode(chat, true, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_GT(plain.size(), ids.size());
  // Control tokens print nothing unless asked.
  EXPECT_EQ(tok_->decode(ids), "user\nHi\n");
  EXPECT_EQ(tok_->decode(ids, false, true), chat);
  EXPECT_EQ(tok_->piece(1), "");
  EXPECT_EQ(tok_->piece(1, true), "<|im_start|>");
}

TEST_F(ModelTokenizer, MalformedUtf8IsReplacementCharacter) {
  // Byte-level BPE sees U+FFFD for each malformed byte (as llama.cpp does).
  EXPECT_EQ(tok_->encode("a\xff" "b", false), tok_->encode("a\xEF\xBF\xBD" "b", false));
  EXPECT_EQ(tok_->decode(tok_->encode("\xC3", false)), "\xEF\xBF\xBD");
}

TEST_F(ModelTokenizer, LongWordsAreFast) {
  // 200k bytes without a pre-tokenizer split: the merge heap keeps this O(n log n).
  const std::string word(200000, 'q');
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok_->encode(word, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok_->decode(ids), word);
  EXPECT_LT(s, 5.0);
}

// ---------------------------------------------------------------------------------------------
// Gemma 3 (SentencePiece, 262,144 tokens; AQUAKV_GEMMA_MODEL = scripts/fetch_model.sh gemma3-270m)

class GemmaTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* m = std::getenv("AQUAKV_GEMMA_MODEL");
    if (m == nullptr || *m == '\0') return;
    file_ = GgufFile::open(m).release();
    tok_ = new Tokenizer(Tokenizer::from_gguf(*file_));
    // Made by `scripts/make_tokenizer_goldens.py --gemma MODEL` (needs llama-cpp-python).
    if (!std::ifstream(kData + "gemma3_goldens.json")) return;
    gold_ = new json(load_json("gemma3_goldens.json"));
    corpus_ = new json(load_json("corpus.json")["pieces"]);
    for (const auto& e : (*gold_)["extra_pieces"]) corpus_->push_back(e);
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete file_;
    delete corpus_;
    delete gold_;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << "AQUAKV_GEMMA_MODEL is not set";
  }
  static inline GgufFile* file_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline json* corpus_ = nullptr;
  static inline json* gold_ = nullptr;
};

TEST_F(GemmaTokenizer, VocabularyAsExpected) {
  EXPECT_EQ(tok_->n_vocab(), 262144);
  EXPECT_EQ(tok_->model(), "llama");
  EXPECT_EQ(tok_->bos(), 2);
  EXPECT_EQ(tok_->eos(), 1);
  EXPECT_TRUE(tok_->add_bos());
  EXPECT_TRUE(tok_->is_eog(1));    // <eos>
  EXPECT_TRUE(tok_->is_eog(106));  // <end_of_turn>
  const auto ids = tok_->encode("<start_of_turn>user\nHi<end_of_turn>", true, true);
  ASSERT_EQ(ids.size(), 6u);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 105);  // <start_of_turn>
  EXPECT_EQ(ids[5], 106);
}

TEST_F(GemmaTokenizer, IdsMatchLlamaCppOnCorpus) {
  if (gold_ == nullptr) GTEST_SKIP() << "tokenizer/gemma3_goldens.json is not made yet";
  EXPECT_EQ(tok_->n_vocab(), (*gold_)["n_vocab"].get<int64_t>());
  EXPECT_EQ(check_cases(*tok_, *corpus_, (*gold_)["cases"], "gemma3"), 0);
}

TEST_F(GemmaTokenizer, PiecesAndDecodesMatchLlamaCpp) {
  if (gold_ == nullptr) GTEST_SKIP() << "tokenizer/gemma3_goldens.json is not made yet";
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64_pieces(*tok_, true));
  EXPECT_EQ(std::string(buf), (*gold_)["pieces_fnv1a64"]["special"].get<std::string>());
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)fnv1a64_pieces(*tok_, false));
  EXPECT_EQ(std::string(buf), (*gold_)["pieces_fnv1a64"]["plain"].get<std::string>());
  for (const auto& s : (*gold_)["sample_pieces"]) {
    const TokenId id = s[0].get<TokenId>();
    EXPECT_EQ(tok_->piece(id, false), from_hex(s[1].get<std::string>())) << id;
    EXPECT_EQ(tok_->piece(id, true), from_hex(s[2].get<std::string>())) << id;
  }
  EXPECT_EQ(check_decodes(*tok_, *corpus_, (*gold_)["cases"], (*gold_)["decode_cases"], "gemma3"),
            0);
}

// The whole WikiText-2 test file (1.29 MB), when present: same count and FNV-1a 64 of the ids
// (little-endian int32) as llama.cpp's.
TEST_F(GemmaTokenizer, WikiText2MatchesLlamaCpp) {
  if (gold_ == nullptr) GTEST_SKIP() << "tokenizer/gemma3_goldens.json is not made yet";
  const char* dir = std::getenv("AQUAKV_SHARED_DIR");
  const std::string path = std::string(dir != nullptr && *dir ? dir : "/work/shared") +
                           "/data/wikitext-2-raw-test.txt";
  std::ifstream f(path, std::ios::binary);
  if (!f) GTEST_SKIP() << path << " is not present";
  std::stringstream ss;
  ss << f.rdbuf();
  const auto ids = tok_->encode(ss.str(), true, false);
  uint64_t h = 0xCBF29CE484222325ull;
  for (TokenId id : ids) {
    for (int b = 0; b < 4; ++b) h = (h ^ uint8_t(uint32_t(id) >> (8 * b))) * 0x100000001B3ull;
  }
  const auto& w = (*gold_)["wikitext"];
  EXPECT_EQ(int64_t(ids.size()), w["n_ids"].get<int64_t>());
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  EXPECT_EQ(std::string(buf), w["ids_fnv1a64"].get<std::string>());
}

// ---------------------------------------------------------------------------------------------
// SentencePiece-style vocabulary (committed GGUF)

class SpmTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    file_ = GgufFile::open(kData + "spm_vocab.gguf").release();
    tok_ = new Tokenizer(Tokenizer::from_gguf(*file_));
    corpus_ = new json(load_json("corpus.json")["pieces"]);
    gold_ = new json(load_json("spm_goldens.json"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete file_;
    delete corpus_;
    delete gold_;
  }
  static inline GgufFile* file_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline json* corpus_ = nullptr;
  static inline json* gold_ = nullptr;
};

TEST_F(SpmTokenizer, IdsMatchLlamaCpp) {
  EXPECT_EQ(tok_->model(), "llama");
  EXPECT_TRUE(tok_->add_bos());
  EXPECT_EQ(check_cases(*tok_, *corpus_, (*gold_)["cases"], "spm"), 0);
}

TEST_F(SpmTokenizer, FlagVariantMatchesLlamaCpp) {
  VocabSpec spec = Tokenizer::spec_from_gguf(*file_);
  spec.add_bos = false;
  spec.add_eos = true;
  spec.add_space_prefix = false;
  const Tokenizer t(spec);
  EXPECT_EQ(check_cases(t, *corpus_, (*gold_)["variant_no_bos_eos_no_space"], "spm variant"), 0);
  EXPECT_EQ(check_decodes(t, *corpus_, (*gold_)["variant_no_bos_eos_no_space"],
                          (*gold_)["variant_decode_cases"], "spm variant"), 0);
}

TEST_F(SpmTokenizer, PiecesAndDecodesMatchLlamaCpp) {
  const auto& pieces = (*gold_)["pieces"];
  ASSERT_EQ(int64_t(pieces.size()), tok_->n_vocab());
  for (TokenId t = 0; t < TokenId(pieces.size()); ++t) {
    EXPECT_EQ(tok_->piece(t, false), from_hex(pieces[t][0].get<std::string>())) << t;
    EXPECT_EQ(tok_->piece(t, true), from_hex(pieces[t][1].get<std::string>())) << t;
  }
  EXPECT_EQ(check_decodes(*tok_, *corpus_, (*gold_)["cases"], (*gold_)["decode_cases"], "spm"),
            0);
}

TEST_F(SpmTokenizer, RoundTripsAnyBytes) {
  // Byte fallback keeps every byte, malformed UTF-8 included; decode drops the space prefix
  // that encode added. Left out, as llama.cpp does the same: text after a user-defined token
  // (it gets a space prefix of its own), and malformed UTF-8 next to a space (a truncated
  // lead byte swallows the following "▁", which then comes back as bytes, not as a space).
  int n = 0;
  for (const auto& c : *corpus_) {
    const std::string text = text_of(c);
    if (text.find("<|user|>") != std::string::npos || text.find("<|bot|>") != std::string::npos ||
        (!valid_utf8(text) && text.find(' ') != std::string::npos)) {
      continue;
    }
    ++n;
    EXPECT_EQ(tok_->decode(tok_->encode(text, false, false)), text)
        << printable(text);
  }
  EXPECT_GT(n, 800);
  // As in llama.cpp: with a BOS in front the first piece keeps its space.
  EXPECT_EQ(tok_->decode(tok_->encode("Hi", true, false), true), " Hi");
}

// ---------------------------------------------------------------------------------------------
// Hand-checked small vocabularies and errors (no reference files needed)

// Byte-level alphabet: bytes 0x21..0x7E are themselves, space is U+0120 "Ġ".
VocabSpec tiny_bpe() {
  VocabSpec s;
  s.model = "gpt2";
  s.pre = "gpt-2";
  s.source = "tiny";
  for (int b = 0; b < 256; ++b) {
    // Spell every byte in the byte-level alphabet (printable ASCII only needs itself).
    if (b >= 0x21 && b <= 0x7E) s.tokens.push_back(std::string(1, char(b)));
    else s.tokens.push_back("<b" + std::to_string(b) + ">");  // unreachable placeholders
  }
  s.tokens.push_back("\xC4\xA0");  // id 256: "Ġ" (space)
  for (const char* t : {"aa", "ab", "abc", "Ġa", "bc"}) s.tokens.push_back(t);  // 257..261
  s.merges = {"a b", "a a", "ab c", "\xC4\xA0 a", "b c"};
  return s;
}

TEST(TokenizerSmall, BpeMergesByRankThenLeftmost) {
  const Tokenizer t(tiny_bpe());
  // "abc": "a b" (rank 0) beats "b c" (rank 4), then "ab c" (rank 2).
  EXPECT_EQ(t.encode("abc", false), std::vector<TokenId>{259});
  // "aaa": two equal-rank "a a" candidates; the leftmost merges first.
  EXPECT_EQ(t.encode("aaa", false), (std::vector<TokenId>{257, 'a'}));
  // "bca": "b c" applies; "c a" has no merge.
  EXPECT_EQ(t.encode("bca", false), (std::vector<TokenId>{261, 'a'}));
  // " a" is one word: "Ġ a" merges.
  EXPECT_EQ(t.encode("x a", false), (std::vector<TokenId>{'x', 260}));
  EXPECT_EQ(t.decode(t.encode("x abc", false)), "x abc");
}

TEST(TokenizerSmall, SpmMergesByScoreWithByteFallback) {
  VocabSpec s;
  s.model = "llama";
  s.source = "tiny-spm";
  s.tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a",      "b",
              "c",     "ab",  "bc",   "\xE2\x96\x81" "a", "<0x7A>"};
  s.scores = {0, 0, 0, -1, -1, -1, -1, -5, -2, -3, 0};
  s.token_types = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6};
  const Tokenizer t(s);
  // " abc" -> "▁abc": "bc" (-2) beats "▁a" (-3) beats "ab" (-5): ▁a | bc.
  EXPECT_EQ(t.encode("abc", true), (std::vector<TokenId>{1, 9, 8}));
  // 'z' has only a byte token; 'y' has none and becomes <unk>.
  EXPECT_EQ(t.encode("zy", false), (std::vector<TokenId>{3, 10, 0}));
  EXPECT_EQ(t.decode(t.encode("abc", false)), "abc");
}

TEST(TokenizerSmall, RejectsBadVocabularies) {
  auto expect_error = [](VocabSpec s, const std::string& needle) {
    try {
      Tokenizer t(s);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  VocabSpec s = tiny_bpe();
  s.pre = "no-such-pre";
  expect_error(s, "unsupported pre-tokenizer 'no-such-pre'");
  s = tiny_bpe();
  s.model = "bert";
  expect_error(s, "tokenizer.ggml.model");
  s = tiny_bpe();
  s.bos = 999999;
  expect_error(s, "bos_token_id");
  s = tiny_bpe();
  s.merges.clear();
  expect_error(s, "merges");
  s = tiny_bpe();
  s.scores = {1.0f};
  expect_error(s, "scores");
  s = tiny_bpe();
  s.tokens.clear();
  expect_error(s, "tokens");
  s = VocabSpec{};  // the default BOS id 1 does not exist in a one-token vocabulary
  s.model = "llama";
  s.tokens = {"<unk>"};
  expect_error(s, "tokenizer.ggml.add_bos_token is true but there is no BOS token");
}

TEST(TokenizerSmall, PieceRejectsBadIds) {
  const Tokenizer t(tiny_bpe());
  EXPECT_THROW(t.piece(-1), Error);
  EXPECT_THROW(t.piece(TokenId(t.n_vocab())), Error);
  EXPECT_THROW(t.decode(std::vector<TokenId>{5, 100000}), Error);
}

TEST(TokenizerSmall, Utf8CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
  EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xC3"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xC3\xA9"), 3u);
  EXPECT_EQ(utf8_complete_prefix("a\xE2\x82"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xF0\x9F\x98"), 1u);
  EXPECT_EQ(utf8_complete_prefix("a\xF0\x9F\x98\x80"), 5u);
  EXPECT_EQ(utf8_complete_prefix("\x80\x80"), 2u);  // stray continuation bytes: nothing to wait for
}

// A minimal GGUF v3 image with metadata only, for error paths of from_gguf.
class MiniGguf {
 public:
  MiniGguf& str(const std::string& k, const std::string& v) {
    key(k, 8);
    put_str(v);
    ++n_;
    return *this;
  }
  MiniGguf& u32(const std::string& k, uint32_t v) {
    key(k, 4);
    put(v);
    ++n_;
    return *this;
  }
  MiniGguf& strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, 9);
    put(uint32_t(8));
    put(uint64_t(v.size()));
    for (const auto& x : v) put_str(x);
    ++n_;
    return *this;
  }
  MiniGguf& i32s(const std::string& k, const std::vector<int32_t>& v) {
    key(k, 9);
    put(uint32_t(5));
    put(uint64_t(v.size()));
    for (int32_t x : v) put(x);
    ++n_;
    return *this;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out{'G', 'G', 'U', 'F', 3, 0, 0, 0};
    auto add = [&](uint64_t v) {
      for (int i = 0; i < 8; ++i) out.push_back(uint8_t(v >> (8 * i)));
    };
    add(0);   // tensors
    add(n_);  // key/values
    out.insert(out.end(), body_.begin(), body_.end());
    while (out.size() % 32) out.push_back(0);
    return out;
  }

 private:
  template <typename T>
  void put(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) body_.push_back(uint8_t(uint64_t(v) >> (8 * i)));
  }
  void put_str(const std::string& s) {
    put(uint64_t(s.size()));
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void key(const std::string& k, uint32_t type) {
    put_str(k);
    put(type);
  }
  std::vector<uint8_t> body_;
  uint64_t n_ = 0;
};

void expect_gguf_error(const MiniGguf& g, const std::string& needle) {
  const auto bytes = g.bytes();
  try {
    const auto f = GgufFile::from_memory(bytes, "mini.gguf");
    Tokenizer::from_gguf(*f);
    ADD_FAILURE() << "no error, expected " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mini.gguf"), std::string::npos) << e.what();
  }
}

MiniGguf mini_spm() {
  MiniGguf g;
  g.str("general.architecture", "llama").str("tokenizer.ggml.model", "llama");
  g.strs("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  return g;
}

TEST(TokenizerGguf, ReadsAMinimalVocabulary) {
  MiniGguf g = mini_spm();
  g.i32s("tokenizer.ggml.token_type", {2, 3, 3, 1});
  const auto bytes = g.bytes();
  const auto f = GgufFile::from_memory(bytes, "mini.gguf");
  const Tokenizer t = Tokenizer::from_gguf(*f);
  EXPECT_EQ(t.n_vocab(), 4);
  // "▁a": "▁" is not a token and there are no byte tokens, so each of its 3 bytes is <unk>.
  EXPECT_EQ(t.encode("a", true), (std::vector<TokenId>{1, 0, 0, 0, 3}));
}

TEST(TokenizerGguf, RefusesBadTokenizerMetadata) {
  expect_gguf_error(MiniGguf().str("general.architecture", "llama"),
                    "tokenizer.ggml.model: missing");
  expect_gguf_error(MiniGguf().str("tokenizer.ggml.model", "bert"), "tokenizer.ggml.model");
  expect_gguf_error(MiniGguf().str("tokenizer.ggml.model", "llama"), "tokenizer.ggml.tokens");
  expect_gguf_error(MiniGguf().str("tokenizer.ggml.model", "llama").i32s("tokenizer.ggml.tokens",
                                                                          {1, 2}),
                    "tokenizer.ggml.tokens");
  expect_gguf_error(mini_spm().u32("tokenizer.ggml.bos_token_id", 4), "bos_token_id");
  expect_gguf_error(mini_spm().i32s("tokenizer.ggml.token_type", {1}), "token_type");
  MiniGguf bpe;
  bpe.str("tokenizer.ggml.model", "gpt2").strs("tokenizer.ggml.tokens", {"a", "b", "ab"});
  expect_gguf_error(bpe, "merges");
  bpe.strs("tokenizer.ggml.merges", {"a b"}).str("tokenizer.ggml.pre", "made-up");
  expect_gguf_error(bpe, "unsupported pre-tokenizer 'made-up'");
}

TEST(TokenizerSmall, Utf8FirstInvalid) {
  const size_t none = std::string_view::npos;
  EXPECT_EQ(utf8_first_invalid(""), none);
  EXPECT_EQ(utf8_first_invalid("h\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80"), none);
  EXPECT_EQ(utf8_first_invalid("ab\xFF"), 2u);
  EXPECT_EQ(utf8_first_invalid("a\x80"), 1u);             // stray continuation byte
  EXPECT_EQ(utf8_first_invalid("ab\xC3"), 2u);            // truncated
  EXPECT_EQ(utf8_first_invalid("\xC3("), 0u);             // bad continuation
  EXPECT_EQ(utf8_first_invalid("x\xC0\x80"), 1u);         // overlong NUL
  EXPECT_EQ(utf8_first_invalid("xy\xED\xA0\x80"), 2u);    // surrogate
  EXPECT_EQ(utf8_first_invalid("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8_first_invalid("\xF4\x8F\xBF\xBF"), none);  // U+10FFFF itself
}

}  // namespace
}  // namespace aquakv
