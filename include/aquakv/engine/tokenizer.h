// Tokenizer: text <-> token ids for a GGUF vocabulary. Owns: the vocabulary tables, the
// byte-level BPE ("gpt2" model, with the pre-tokenizer named by tokenizer.ggml.pre) and the
// SentencePiece-style BPE ("llama" model: score-ordered merges, byte fallback, "▁" for space),
// special-token parsing, BOS/EOS insertion, decoding and per-token pieces for streaming.
// Not: reading GGUF files (engine/gguf.h), chat templates or sampling.
//
// Behaviour follows llama.cpp's tokenizer for the same GGUF (our goldens come from it):
// encode(text, add_special, parse_special) is llama_tokenize(text, add_special, parse_special).
// A Tokenizer is immutable once built: its const methods may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aquakv {

class GgufFile;

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

// Plain description of a vocabulary: what the tokenizer.* GGUF keys hold.
struct VocabSpec {
  std::string model;                 // tokenizer.ggml.model: "gpt2" or "llama"
  std::string pre;                   // tokenizer.ggml.pre; empty when absent ("default")
  std::vector<std::string> tokens;   // tokenizer.ggml.tokens, id = index
  std::vector<float> scores;         // tokenizer.ggml.scores: empty or one per token
  std::vector<int32_t> token_types;  // tokenizer.ggml.token_type: empty (all Normal) or 1 per token
  std::vector<std::string> merges;   // tokenizer.ggml.merges ("left right", rank = index; gpt2)
  // Special ids; absent means the model type's default (llama: bos 1, eos 2, unk 0).
  std::optional<int64_t> bos, eos, unk, eot, eom, pad;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string source = "vocabulary";  // file name used in error messages
};

class Tokenizer {
 public:
  // Validates the spec (sizes, ids, merges, known model/pre-tokenizer); throws Error naming
  // spec.source, the field, expected and actual value.
  explicit Tokenizer(const VocabSpec& spec);
  // Reads the tokenizer.* keys of `file`.
  static VocabSpec spec_from_gguf(const GgufFile& file);
  // Builds from the tokenizer.* keys of `file`, then drops the resident pages of its metadata
  // (GgufFile::release_metadata_pages): the vocabulary is held in the tokenizer's own tables.
  static Tokenizer from_gguf(const GgufFile& file);

  // Text (UTF-8 bytes) to ids. add_special: add BOS/EOS when the vocabulary's add_bos/add_eos
  // flags say so. parse_special: control-token texts in `text` (e.g. "<|im_start|>") become
  // their ids; user-defined tokens are always matched. For gpt2 vocabularies malformed UTF-8
  // is tokenized as U+FFFD; llama (SentencePiece) vocabularies keep the raw bytes through
  // byte-fallback tokens.
  std::vector<TokenId> encode(std::string_view text, bool add_special = true,
                              bool parse_special = false) const;

  // Bytes of one token, as a stream of pieces concatenates to decode()'s output (before
  // decode's space clean-up). Control/unknown tokens give "" unless `special`.
  // The bytes may end inside a UTF-8 sequence (byte tokens); see utf8_complete_prefix().
  // The view stays valid as long as the tokenizer (or a copy sharing its tables) lives.
  std::string_view piece(TokenId id, bool special = false) const;

  // Ids to text. remove_special: drop a leading BOS / trailing EOS that add_special would
  // have added. unparse_special: render control tokens as their text. As in llama.cpp, the
  // space a SentencePiece vocabulary prefixes is removed from the first piece only when the ids
  // do not start with BOS; gpt2 vocabularies whose pre-tokenizer asks for it get Hugging Face's
  // clean_up_tokenization_spaces (" ." -> ".", " 's" -> "'s", ...).
  std::string decode(std::span<const TokenId> ids, bool remove_special = false,
                     bool unparse_special = false) const;

  int64_t n_vocab() const;
  std::string_view token_text(TokenId id) const;  // the vocabulary string (valid as piece())
  TokenType token_type(TokenId id) const;
  float token_score(TokenId id) const;
  TokenId bos() const;  // kNoToken when the vocabulary has none
  TokenId eos() const;
  TokenId eot() const;
  TokenId unk() const;
  bool add_bos() const;
  bool add_eos() const;
  bool is_eog(TokenId id) const;  // end of generation: eos, eot, eom and the usual end markers
  const std::string& model() const;
  const std::string& pre() const;
  TokenId find(std::string_view text) const;  // id of an exact vocabulary string, or kNoToken

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;  // immutable after construction; copies share it
};

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence that the
// following bytes could still complete (for printing streamed pieces).
size_t utf8_complete_prefix(std::string_view s);

// Offset of the first byte of `s` that does not begin a well-formed UTF-8 sequence (overlong
// forms, surrogates and code points above U+10FFFF are not well-formed), or npos if none.
size_t utf8_first_invalid(std::string_view s);

// Throws Error "WHAT: invalid UTF-8 at byte N (0xXX)" unless `s` is well-formed UTF-8: every
// text a command feeds the tokenizer (prompts, evaluation and calibration texts) passes here.
void require_utf8(std::string_view s, const std::string& what);

}  // namespace aquakv
