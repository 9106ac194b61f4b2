// Tokenizer::spec_from_gguf / from_gguf: the tokenizer.* metadata of a GGUF file.
#include "aquakv/engine/gguf.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

std::optional<int64_t> opt_id(const GgufFile& f, std::string_view key) {
  if (f.find(key) == nullptr) return std::nullopt;
  return int64_t(f.get_u64(key));
}

std::optional<bool> opt_bool(const GgufFile& f, std::string_view key) {
  if (f.find(key) == nullptr) return std::nullopt;
  return f.get_bool_or(key, false);
}

}  // namespace

VocabSpec Tokenizer::spec_from_gguf(const GgufFile& f) {
  VocabSpec s;
  s.source = f.path();
  if (f.find("tokenizer.ggml.model") == nullptr) {
    fail("{}: tokenizer.ggml.model: missing (the file has no tokenizer)", f.path());
  }
  s.model = f.get_string("tokenizer.ggml.model");
  if (s.model != "gpt2" && s.model != "llama") {
    fail("{}: tokenizer.ggml.model: expected 'gpt2' or 'llama', got '{}'", f.path(), s.model);
  }
  s.pre = f.get_string_opt("tokenizer.ggml.pre").value_or("");
  if (f.find("tokenizer.ggml.tokens") == nullptr) {
    fail("{}: tokenizer.ggml.tokens: missing", f.path());
  }
  s.tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (f.find("tokenizer.ggml.scores") != nullptr) {
    for (double v : f.get_f64_array("tokenizer.ggml.scores")) s.scores.push_back(float(v));
  }
  if (f.find("tokenizer.ggml.token_type") != nullptr) {
    for (int64_t v : f.get_i64_array("tokenizer.ggml.token_type")) {
      s.token_types.push_back(v >= INT32_MIN && v <= INT32_MAX ? int32_t(v) : 0);
    }
  }
  if (f.find("tokenizer.ggml.merges") != nullptr) {
    s.merges = f.get_string_array("tokenizer.ggml.merges");
  }
  s.bos = opt_id(f, "tokenizer.ggml.bos_token_id");
  s.eos = opt_id(f, "tokenizer.ggml.eos_token_id");
  s.unk = opt_id(f, "tokenizer.ggml.unknown_token_id");
  s.eot = opt_id(f, "tokenizer.ggml.eot_token_id");
  s.eom = opt_id(f, "tokenizer.ggml.eom_token_id");
  s.pad = opt_id(f, "tokenizer.ggml.padding_token_id");
  s.add_bos = opt_bool(f, "tokenizer.ggml.add_bos_token");
  s.add_eos = opt_bool(f, "tokenizer.ggml.add_eos_token");
  s.add_space_prefix = opt_bool(f, "tokenizer.ggml.add_space_prefix");
  return s;
}

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  Tokenizer t(spec_from_gguf(f));
  // The vocabulary now lives in t's tables: the file's pages of its arrays (SmolLM2: 1.7 MiB of
  // tokens, types and merges) need not stay resident.
  f.release_metadata_pages();
  return t;
}

}  // namespace aquakv
