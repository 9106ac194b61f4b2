// Pre-tokenizer of byte-level BPE vocabularies (private to the tokenizer). Owns: the table of
// known tokenizer.ggml.pre names, their split regexes and flags, and splitting code points into
// words with them. Not: BPE merging (tokenizer_bpe.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace aquakv {

class PreTokenizer {
 public:
  // Throws Error naming `source` for an unknown name. Empty `name` means "default".
  PreTokenizer(const std::string& name, const std::string& source);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits cps into words; appends the end offset of each word (in code points) to `ends`.
  // Every step splits each current word independently (a regex never sees across a word
  // boundary made by an earlier step); unmatched stretches between matches are words too.
  void split(std::span<const uint32_t> cps, std::vector<uint32_t>& ends) const;

  bool ignore_merges() const { return ignore_merges_; }  // a word that is a token stays whole
  bool clean_spaces() const { return clean_spaces_; }    // decode drops " ." style spaces
  bool default_add_bos() const { return add_bos_; }

 private:
  struct Step;
  std::vector<std::unique_ptr<Step>> steps_;
  bool ignore_merges_ = false;
  bool clean_spaces_ = true;
  bool add_bos_ = false;
};

}  // namespace aquakv
