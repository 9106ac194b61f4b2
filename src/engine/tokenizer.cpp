// Tokenizer: vocabulary tables, special-token splitting, BOS/EOS, pieces and decoding. The
// algorithm-specific encoders live in tokenizer_bpe.cpp and tokenizer_spm.cpp.
#include "aquakv/engine/tokenizer.h"

#include <algorithm>
#include <climits>

#include "aquakv/util/error.h"
#include "tokenizer_impl.h"
#include "unicode.h"

namespace aquakv {
namespace {

// Token texts that end generation in the usual chat/instruct vocabularies, and the FIM
// separators that also do (a model that emits them has left the text it was asked for). As in
// llama.cpp (the reference the tokenizer goldens come from, llama-cpp-python 0.3.36), a token
// with one of these texts is a control token whatever the file says: e.g. Gemma 3 marks "</s>"
// user-defined, and llama.cpp neither matches it in plain text nor prints it.
const char* const kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
};

TokenId checked_id(const VocabSpec& spec, const char* key, std::optional<int64_t> given,
                   TokenId dflt, int64_t n) {
  if (given) {
    if (*given < 0 || *given >= n) {
      fail("{}: tokenizer.ggml.{}: expected a token id below n_vocab {}, got {}", spec.source,
           key, n, *given);
    }
    return TokenId(*given);
  }
  return dflt >= 0 && dflt < n ? dflt : kNoToken;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t m; (m = s.find(from, pos)) != std::string::npos; pos = m + from.size()) {
    out.append(s, pos, m - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  return out;
}

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

// The bytes a token stands for (llama.cpp's token_to_piece with special = true).
std::string make_piece(const Tokenizer::Impl& t, TokenId id) {
  const std::string_view s = t.text[id];
  switch (t.type[id]) {
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::UserDefined:
      return std::string(s);
    case TokenType::Normal: {
      if (t.kind == Tokenizer::Impl::Kind::Spm) return replace_all(std::string(s), kSpmSpace, " ");
      std::string out;
      for (uint32_t cp : utf8_to_cps(s)) {
        const int b = cp_to_byte(cp);
        if (b >= 0) out.push_back(char(b));
        else append_utf8(out, cp);  // not in the byte alphabet: keep the character itself
      }
      return out;
    }
    case TokenType::Byte: {  // "<0xXX>"; anything else prints as its text
      auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
             : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      };
      if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' && hex(s[3]) >= 0 &&
          hex(s[4]) >= 0) {
        return std::string(1, char(hex(s[3]) * 16 + hex(s[4])));
      }
      return std::string(s);
    }
    default:
      return "";  // unused / undefined tokens print nothing
  }
}

}  // namespace

Tokenizer::Tokenizer(const VocabSpec& spec) {
  auto impl = std::make_shared<Impl>();
  Impl& t = *impl;
  t.model = spec.model;
  t.pre = spec.pre;
  t.source = spec.source;
  if (spec.model == "gpt2") {
    t.kind = Impl::Kind::Bpe;
  } else if (spec.model == "llama") {
    t.kind = Impl::Kind::Spm;
  } else {
    fail("{}: tokenizer.ggml.model: expected 'gpt2' or 'llama', got '{}'", spec.source,
         spec.model);
  }
  const int64_t n = int64_t(spec.tokens.size());
  if (n == 0 || n > INT32_MAX) {
    fail("{}: tokenizer.ggml.tokens: expected 1 to {} tokens, got {}", spec.source, INT32_MAX, n);
  }
  if (!spec.scores.empty() && int64_t(spec.scores.size()) < n) {
    fail("{}: tokenizer.ggml.scores: expected {} values, got {}", spec.source, n,
         spec.scores.size());
  }
  if (!spec.token_types.empty() && int64_t(spec.token_types.size()) < n) {
    fail("{}: tokenizer.ggml.token_type: expected {} values, got {}", spec.source, n,
         spec.token_types.size());
  }
  size_t text_bytes = 0;
  for (const std::string& s : spec.tokens) text_bytes += s.size();
  t.text.reserve(size_t(n), text_bytes);
  t.score.assign(n, 0.0f);
  t.type.assign(n, TokenType::Normal);
  for (int64_t i = 0; i < n; ++i) {
    if (spec.tokens[i].empty()) t.text.push_back("[EMPTY_" + std::to_string(i) + "]", "tokenizer.ggml.tokens");
    else t.text.push_back(spec.tokens[i], "tokenizer.ggml.tokens");
    if (!spec.scores.empty()) t.score[i] = spec.scores[i];
    if (!spec.token_types.empty()) {
      const int32_t v = spec.token_types[i];
      t.type[i] = v >= 0 && v <= 6 ? TokenType(v) : TokenType::Undefined;
    }
  }
  t.text.shrink_to_fit();  // empty tokens' "[EMPTY_i]" texts outgrow the reserved bytes
  t.to_id.build(t.text);

  const bool spm = t.kind == Impl::Kind::Spm;
  t.bos = checked_id(spec, "bos_token_id", spec.bos, spm ? 1 : 11, n);
  t.eos = checked_id(spec, "eos_token_id", spec.eos, spm ? 2 : 11, n);
  t.unk = checked_id(spec, "unknown_token_id", spec.unk, spm ? 0 : kNoToken, n);
  t.eot = checked_id(spec, "eot_token_id", spec.eot, kNoToken, n);
  t.eom = checked_id(spec, "eom_token_id", spec.eom, kNoToken, n);
  checked_id(spec, "padding_token_id", spec.pad, kNoToken, n);

  if (spm) {
    t.add_space_prefix = true;
    t.add_bos = true;
    t.clean_spaces = false;
    t.build_spm();
  } else {
    t.build_bpe(spec);
    t.add_bos = t.bpe.pretok->default_add_bos();
    t.clean_spaces = t.bpe.pretok->clean_spaces();
  }
  t.add_bos = spec.add_bos.value_or(t.add_bos);
  t.add_eos = spec.add_eos.value_or(t.add_eos);
  t.add_space_prefix = spec.add_space_prefix.value_or(t.add_space_prefix);
  if (t.add_bos && t.bos == kNoToken) {
    fail("{}: tokenizer.ggml.add_bos_token is true but there is no BOS token", spec.source);
  }
  if (t.add_eos && t.eos == kNoToken) {
    fail("{}: tokenizer.ggml.add_eos_token is true but there is no EOS token", spec.source);
  }

  // End-of-generation set; the marker texts are control tokens whatever the file says.
  for (TokenId id : {t.eos, t.eot, t.eom}) {
    if (id != kNoToken) t.eog.insert(id);
  }
  for (const char* s : kEogTexts) {
    const TokenId id = t.lookup(s);
    if (id == kNoToken) continue;
    t.eog.insert(id);
    if (t.type[id] != TokenType::Control) t.type[id] = TokenType::Control;
  }

  for (TokenId id = 0; id < TokenId(n); ++id) {
    const TokenType ty = t.type[id];
    if (ty == TokenType::Control || ty == TokenType::UserDefined || ty == TokenType::Unknown) {
      t.specials.push_back(id);
    }
  }
  std::stable_sort(t.specials.begin(), t.specials.end(), [&](TokenId a, TokenId b) {
    return t.text[a].size() > t.text[b].size();
  });
  t.pieces.reserve(size_t(n), text_bytes);  // a piece is rarely longer than its text
  for (TokenId id = 0; id < TokenId(n); ++id) t.pieces.push_back(make_piece(t, id), "token pieces");
  t.pieces.shrink_to_fit();
  impl_ = std::move(impl);
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& t = *impl_;
  if (text.size() > size_t(INT32_MAX)) {  // offsets inside the encoders are 32-bit
    fail("text of {} bytes is too long to tokenize at once (limit {} bytes)", text.size(),
         INT32_MAX);
  }
  // Split the text at special-token texts, longest tokens first, leftmost occurrence first.
  struct Frag {
    TokenId id;  // kNoToken: plain text [off, off + len)
    size_t off, len;
  };
  std::vector<Frag> frags, next;
  if (!text.empty()) frags.push_back({kNoToken, 0, text.size()});
  for (TokenId sid : t.specials) {
    const TokenType ty = t.type[sid];
    if (!parse_special && (ty == TokenType::Control || ty == TokenType::Unknown)) continue;
    const std::string_view st = t.text[sid];
    if (text.find(st) == std::string_view::npos) continue;
    next.clear();
    for (const Frag& f : frags) {
      if (f.id != kNoToken) {
        next.push_back(f);
        continue;
      }
      const std::string_view window = text.substr(0, f.off + f.len);
      size_t pos = f.off;
      for (size_t m; (m = window.find(st, pos)) != std::string_view::npos; pos = m + st.size()) {
        if (m > pos) next.push_back({kNoToken, pos, m - pos});
        next.push_back({sid, m, st.size()});
      }
      if (pos < f.off + f.len) next.push_back({kNoToken, pos, f.off + f.len - pos});
    }
    frags.swap(next);
  }

  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special && t.add_bos) out.push_back(t.bos);
  bool prev_special = true;  // SentencePiece: a space is prefixed after a special token
  for (const Frag& f : frags) {
    if (f.id != kNoToken) {
      out.push_back(f.id);
      prev_special = true;
      continue;
    }
    const std::string_view s = text.substr(f.off, f.len);
    if (t.kind == Impl::Kind::Bpe) {
      t.encode_bpe(s, out);
    } else {
      std::string w = t.add_space_prefix && prev_special ? " " : "";
      w.append(s);
      t.encode_spm(replace_all(std::move(w), " ", kSpmSpace), out);
    }
    prev_special = false;
  }
  if (add_special && t.add_eos) out.push_back(t.eos);
  return out;
}

std::string_view Tokenizer::piece(TokenId id, bool special) const {
  const Impl& t = *impl_;
  if (id < 0 || id >= TokenId(t.text.size())) {
    fail("token id {} is outside the vocabulary (0..{})", id, t.text.size() - 1);
  }
  if (!special && (t.type[id] == TokenType::Control || t.type[id] == TokenType::Unknown)) {
    return {};
  }
  return t.pieces[size_t(id)];
}

namespace {

// Hugging Face's clean_up_tokenization_spaces, as llama.cpp applies it: " ?", " !", " .", " ,"
// lose the space; " ' " becomes "'"; " 's", " 'm", " 're", " 've" lose the space.
std::string clean_spaces(std::string s) {
  auto pass = [](std::string& src, auto&& step) {
    if (src.empty()) return;
    std::string dst(1, src[0]);
    for (size_t i = 1; i < src.size(); ++i) step(src, dst, i);
    src.swap(dst);
  };
  pass(s, [](std::string& src, std::string& dst, size_t& i) {
    const char x = src[i];
    if (src[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) dst.pop_back();
    dst.push_back(x);
  });
  pass(s, [](std::string& src, std::string& dst, size_t& i) {
    const char x = src[i];
    if (x == '\'' && i + 1 < src.size() && src[i - 1] == ' ' && src[i + 1] == ' ') {
      dst.pop_back();
      src[++i] = '\0';  // the space after is dropped too (and no longer counts as a space)
    }
    dst.push_back(x);
  });
  pass(s, [](std::string& src, std::string& dst, size_t& i) {
    const char x = src[i];
    if (src[i - 1] == ' ' && x == '\'' && i + 1 < src.size()) {
      const char x1 = src[i + 1];
      const char x2 = i + 2 < src.size() ? src[i + 2] : '\0';
      if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) {
        dst.pop_back();
      }
    }
    dst.push_back(x);
  });
  return s;
}

}  // namespace

std::string Tokenizer::decode(std::span<const TokenId> ids, bool remove_special,
                              bool unparse_special) const {
  const Impl& t = *impl_;
  bool strip_space = t.add_space_prefix;  // the space encode() put in front of the text
  if (remove_special && t.add_bos && !ids.empty() && ids.front() == t.bos) {
    strip_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && t.add_eos && !ids.empty() && ids.back() == t.eos) {
    ids = ids.first(ids.size() - 1);
  }
  std::string out;
  for (TokenId id : ids) {
    std::string_view p = piece(id, unparse_special);
    if (strip_space && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    strip_space = false;
    out.append(p);
  }
  return t.clean_spaces ? clean_spaces(std::move(out)) : out;
}

int64_t Tokenizer::n_vocab() const { return int64_t(impl_->text.size()); }

std::string_view Tokenizer::token_text(TokenId id) const {
  if (id < 0 || id >= TokenId(impl_->text.size())) {
    fail("token id {} is outside the vocabulary (0..{})", id, impl_->text.size() - 1);
  }
  return impl_->text[size_t(id)];
}

TokenType Tokenizer::token_type(TokenId id) const {
  token_text(id);
  return impl_->type[id];
}

float Tokenizer::token_score(TokenId id) const {
  token_text(id);
  return impl_->score[id];
}

TokenId Tokenizer::bos() const { return impl_->bos; }
TokenId Tokenizer::eos() const { return impl_->eos; }
TokenId Tokenizer::eot() const { return impl_->eot; }
TokenId Tokenizer::unk() const { return impl_->unk; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }
bool Tokenizer::is_eog(TokenId id) const { return impl_->eog.count(id) != 0; }
const std::string& Tokenizer::model() const { return impl_->model; }
const std::string& Tokenizer::pre() const { return impl_->pre; }
TokenId Tokenizer::find(std::string_view text) const { return impl_->lookup(text); }

size_t utf8_complete_prefix(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  const size_t n = s.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const auto b = uint8_t(s[n - k]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    if (b >= 0xC0 && size_t(utf8_seq_len(b)) > k) return n - k;
    return n;
  }
  return n;
}

size_t utf8_first_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = uint8_t(s[i]);
    const size_t n = b < 0x80 ? 1 : b < 0xC0 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF8 ? 4 : 0;
    if (n == 0 || n > s.size() - i) return i;
    uint32_t cp = n == 1 ? b : b & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
    }
    const uint32_t min_cp = n == 1 ? 0 : n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return i;
    i += n;
  }
  return std::string_view::npos;
}

void require_utf8(std::string_view s, const std::string& what) {
  if (const size_t bad = utf8_first_invalid(s); bad != std::string_view::npos)
    fail("{}: invalid UTF-8 at byte {} (0x{:02X})", what, bad, uint8_t(s[bad]));
}

}  // namespace aquakv
