// Pre-tokenizers of byte-level BPE vocabularies: each is a list of split regexes run with
// PCRE2 (32-bit code units, so the subject is the code point array itself).
//
// Character classes follow our own Unicode table (unicode.h), not PCRE2's: a regex that uses
// \p{..} runs on a "collapsed" copy of the text in which every non-ASCII code point is replaced
// by one marker code unit per class (0xD1 number, 0xD2 letter, 0xD3 punctuation, 0xD4 mark,
// 0xD5 symbol, 0xD0 anything else, 0x0B any White_Space), and each \p{X} in the regex becomes
// a class of that marker plus the ASCII members of X. Regexes without \p{..} run on the real
// code points with non-ASCII White_Space replaced by 0x0B, so \s means White_Space in both.
// This is how llama.cpp runs these regexes, so word boundaries agree with it exactly.
#define PCRE2_CODE_UNIT_WIDTH 32
#include "pretokenizer.h"

#include <pcre2.h>

#include <string_view>

#include "aquakv/util/error.h"
#include "unicode.h"

namespace aquakv {
namespace {

// The split regexes, as written in the models' tokenizer.json files ((?i:) spelled out).
constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::string_view kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// DeepSeek classes, non-ASCII code points written as \x{..} escapes (a literal
// character could be silently normalized to another code point by an editor).
constexpr std::string_view kCjk =
    "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";
constexpr std::string_view kDeepseekLatin =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-"
    "\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}"
    "\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-"
    "\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-"
    "\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}"
    "\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-"
    "\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}"
    "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"
    "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+";
constexpr std::string_view kDeepseekPunct =
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-"
    "\\x{3002}]+";

struct PreDef {
  std::vector<std::string_view> names;
  std::vector<std::string_view> regexes;
  bool ignore_merges = false;
  bool clean_spaces = true;
  bool add_bos = false;
};

const std::vector<PreDef>& pre_defs() {
  static const std::vector<PreDef> defs = {
      {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
      {{"gpt-2", "phi-2", "mpt", "olmo"}, {kGpt2}},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3"}, {kLlama3}, true, true, true},
      {{"smollm", "command-r"}, {R"(\p{N})", kGpt2}, false, false},
      {{"starcoder", "refact"}, {R"(\p{N})", kGpt2}},
      {{"qwen2", "deepseek-r1-qwen"}, {kQwen2}, false, false},
      {{"stablelm2"}, {kQwen2}},
      {{"deepseek-llm"},
       {"[\r\n]", kDeepseekLatin, kDeepseekPunct, R"(\s+$)", kCjk, R"(\p{N}+)"},
       false, false},
      {{"deepseek-coder"},
       {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjk, R"(\p{N})"}, false, false},
      {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, "[0-9][0-9][0-9]"}},
  };
  return defs;
}

constexpr uint32_t kMarkerOther = 0xD0;
constexpr uint32_t kVerticalTab = 0x0B;

uint32_t marker_of(UCat c) {
  switch (c) {
    case UCat::Number: return 0xD1;
    case UCat::Letter: return 0xD2;
    case UCat::Punct: return 0xD3;
    case UCat::Mark: return 0xD4;
    case UCat::Symbol: return 0xD5;
    default: return kMarkerOther;
  }
}

// Rewrites \p{X} (X in N, L, P, M, S) into the collapsed alphabet; returns the pattern as code
// units. Sets `collapsed` when the pattern used any \p{..}.
std::vector<uint32_t> to_pattern(std::string_view re, bool& collapsed, const std::string& source) {
  const std::vector<uint32_t> cps = utf8_to_cps(re);
  std::vector<uint32_t> out;
  collapsed = false;
  bool in_class = false;
  auto emit_hex = [&](uint32_t v) {
    char buf[16];
    const int n = std::snprintf(buf, sizeof buf, "\\x{%X}", v);
    out.insert(out.end(), buf, buf + n);
  };
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t c = cps[i];
    if (c == '\\' && i + 1 < cps.size()) {
      if (cps[i + 1] == 'p' && i + 4 < cps.size() && cps[i + 2] == '{' && cps[i + 4] == '}') {
        UCat cat;
        switch (cps[i + 3]) {
          case 'N': cat = UCat::Number; break;
          case 'L': cat = UCat::Letter; break;
          case 'P': cat = UCat::Punct; break;
          case 'M': cat = UCat::Mark; break;
          case 'S': cat = UCat::Symbol; break;
          default: fail("{}: unsupported class in pre-tokenizer regex {}", source, re);
        }
        collapsed = true;
        if (!in_class) out.push_back('[');
        emit_hex(marker_of(cat));
        for (uint32_t a = 0; a < 128; ++a) {
          if (ucd_cat(a) == cat) emit_hex(a);
        }
        if (!in_class) out.push_back(']');
        i += 4;
        continue;
      }
      out.push_back(c);
      out.push_back(cps[++i]);
      continue;
    }
    if (c == '[' && !in_class) in_class = true;
    else if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  if (collapsed) {
    for (uint32_t c : cps) {
      if (c >= 128) fail("{}: pre-tokenizer regex mixes \\p{{}} and non-ASCII: {}", source, re);
    }
  }
  return out;
}

}  // namespace

struct PreTokenizer::Step {
  pcre2_code* code = nullptr;
  bool collapsed = false;
  ~Step() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::string& name, const std::string& source) {
  const std::string key = name.empty() ? "default" : name;
  const PreDef* def = nullptr;
  for (const auto& d : pre_defs()) {
    for (auto n : d.names) {
      if (n == key) def = &d;
    }
  }
  if (def == nullptr) {
    std::string known;
    for (const auto& d : pre_defs()) {
      for (auto n : d.names) known += (known.empty() ? "" : ", ") + std::string(n);
    }
    fail("{}: tokenizer.ggml.pre: unsupported pre-tokenizer '{}' (supported: {})", source, name,
         known);
  }
  ignore_merges_ = def->ignore_merges;
  clean_spaces_ = def->clean_spaces;
  add_bos_ = def->add_bos;
  for (auto re : def->regexes) {
    auto step = std::make_unique<Step>();
    const std::vector<uint32_t> pat = to_pattern(re, step->collapsed, source);
    int err = 0;
    PCRE2_SIZE err_off = 0;
    step->code = pcre2_compile(pat.data(), pat.size(), PCRE2_DOLLAR_ENDONLY, &err, &err_off,
                               nullptr);
    if (step->code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, 256);
      std::string m;
      for (int i = 0; i < 256 && msg[i] != 0; ++i) append_utf8(m, msg[i]);
      fail("{}: pre-tokenizer regex {} does not compile at {}: {}", source, re, err_off, m);
    }
    pcre2_jit_compile(step->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter
    steps_.push_back(std::move(step));
  }
}

PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::span<const uint32_t> cps, std::vector<uint32_t>& ends) const {
  const size_t n = cps.size();
  if (n == 0) return;
  std::vector<uint32_t> plain, collapsed;
  for (const auto& s : steps_) {
    std::vector<uint32_t>& buf = s->collapsed ? collapsed : plain;
    if (!buf.empty()) continue;
    buf.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t c = cps[i];
      if (c < 128) buf[i] = c;
      else if (ucd_is_space(c)) buf[i] = kVerticalTab;
      else buf[i] = s->collapsed ? marker_of(ucd_cat(c)) : c;
    }
  }
  std::vector<uint32_t> cur{uint32_t(n)}, next;
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  if (md == nullptr) throw std::bad_alloc();
  for (const auto& s : steps_) {
    const uint32_t* text = (s->collapsed ? collapsed : plain).data();
    next.clear();
    uint32_t start = 0;
    for (uint32_t end : cur) {
      const PCRE2_SPTR subject = text + start;
      const PCRE2_SIZE len = end - start;
      PCRE2_SIZE pos = 0, done = 0;
      uint32_t options = 0;
      while (pos <= len) {
        const int rc = pcre2_match(s->code, subject, len, pos, options, md, nullptr);
        if (rc < 0) {
          if (options == 0) break;
          options = 0;  // no non-empty match here: step one unit and retry
          ++pos;
          continue;
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {  // empty match: look for a non-empty one from the same place
          options = PCRE2_NOTEMPTY_ATSTART;
          pos = ov[0];
          continue;
        }
        options = 0;
        if (ov[0] > done) next.push_back(start + uint32_t(ov[0]));
        next.push_back(start + uint32_t(ov[1]));
        done = pos = ov[1];
      }
      if (done < len) next.push_back(end);
      start = end;
    }
    cur.swap(next);
  }
  pcre2_match_data_free(md);
  ends.insert(ends.end(), cur.begin(), cur.end());
}

}  // namespace aquakv
