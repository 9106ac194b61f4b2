// Passkey retrieval (needle in a haystack) prompts for long-context tests. Owns: building a
// prompt of a target token length with a seeded random key hidden at a chosen depth, and
// scoring an answer. Not: running the model (tools/aquakv/cmd_passkey.cpp), tokenization (the
// caller passes its tokenizer as a callback, so this is testable with a toy tokenizer).
//
// Prompt = intro + filler x n_before + needle + filler x n_after + question, where the needle
// says the key twice and the question ends with "The pass key is" so a model continues with the
// key. n_before + n_after is the largest filler count whose prompt fits target_tokens, and
// n_before = round(depth * (n_before + n_after)): depth 0 puts the needle right after the intro,
// depth 1 right before the question.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace aquakv::eval {

// Text -> token ids, without BOS (the caller adds BOS when it feeds the model).
using TokenizeFn = std::function<std::vector<int32_t>(const std::string&)>;

struct PasskeyPrompt {
  std::string text;
  std::string key;              // the decimal key, e.g. "48213"
  int64_t n_tokens = 0;         // tokens of text
  int64_t needle_token = 0;     // index of the needle's first token
  int64_t haystack_begin = 0;   // first filler token (end of the intro)
  int64_t haystack_tokens = 0;  // filler tokens (the needle excluded)
  // Where the needle sits in the filler, measured in tokens: 0 = start, 1 = end.
  double depth() const {
    return haystack_tokens == 0 ? 0.0 : double(needle_token - haystack_begin) / double(haystack_tokens);
  }
};

// Builds a prompt of at most target_tokens tokens (and within one filler sentence of it) with a
// key of `key_digits` digits drawn from `seed`, at `depth` in [0, 1]. Throws Error when
// target_tokens cannot hold the intro, needle and question.
PasskeyPrompt make_passkey_prompt(const TokenizeFn& tokenize, int64_t target_tokens, double depth,
                                  uint64_t seed, int key_digits = 5);

// The key drawn for a seed (uniform over the key_digits-digit numbers, no leading zero).
std::string passkey_for_seed(uint64_t seed, int key_digits);

// True when the first run of digits in the model's continuation equals the key.
bool passkey_answer_correct(const std::string& continuation, const std::string& key);

}  // namespace aquakv::eval
