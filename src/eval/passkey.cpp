// Passkey retrieval prompts (see include/aquakv/eval/passkey.h).
#include "aquakv/eval/passkey.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

const char* const kIntro =
    "There is an important piece of information hidden inside a lot of irrelevant text. Find it "
    "and memorize it. I will quiz you about the important information there.\n";
// Each unit starts with a space so word-level pre-tokenizers split cleanly at unit boundaries.
const char* const kFiller =
    " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* const kQuestion = "\nWhat is the pass key? The pass key is";

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string repeat(const std::string& s, int64_t n) {
  std::string r;
  r.reserve(s.size() * size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) r += s;
  return r;
}

struct Parts {
  std::string head;  // intro + filler before the needle
  std::string full;
};

Parts assemble(const std::string& needle, int64_t n_fill, double depth) {
  const int64_t before = std::llround(depth * double(n_fill));
  Parts p;
  p.head = kIntro + repeat(kFiller, before);
  p.full = p.head + needle + repeat(kFiller, n_fill - before) + kQuestion;
  return p;
}

}  // namespace

std::string passkey_for_seed(uint64_t seed, int key_digits) {
  if (key_digits < 1 || key_digits > 18) fail("passkey: key digits {} not in 1..18", key_digits);
  uint64_t lo = 1;
  for (int i = 1; i < key_digits; ++i) lo *= 10;
  const uint64_t span = key_digits == 1 ? 10 : lo * 9;
  return std::to_string((key_digits == 1 ? 0 : lo) + splitmix64(seed) % span);
}

PasskeyPrompt make_passkey_prompt(const TokenizeFn& tokenize, int64_t target_tokens, double depth,
                                  uint64_t seed, int key_digits) {
  if (!(depth >= 0.0 && depth <= 1.0)) fail("passkey: depth {} not in [0, 1]", depth);
  const std::string key = passkey_for_seed(seed, key_digits);
  const std::string needle = " The pass key is " + key + ". Remember it. " + key +
                             " is the pass key.";
  auto count = [&](int64_t n) { return int64_t(tokenize(assemble(needle, n, depth).full).size()); };
  const int64_t fixed = count(0);
  if (fixed > target_tokens)
    fail("passkey: a {}-token prompt cannot hold the intro, key and question ({} tokens)",
         target_tokens, fixed);
  // Estimate the filler count from the tokens of 16 units, then correct it by exact counts.
  const double per_unit = double(tokenize(repeat(kFiller, 16)).size()) / 16.0;
  int64_t n = std::max<int64_t>(0, int64_t(double(target_tokens - fixed) / std::max(per_unit, 1.0)));
  while (n > 0 && count(n) > target_tokens) --n;
  while (count(n + 1) <= target_tokens) ++n;

  const Parts parts = assemble(needle, n, depth);
  PasskeyPrompt p;
  p.text = parts.full;
  p.key = key;
  p.n_tokens = int64_t(tokenize(parts.full).size());
  p.haystack_begin = int64_t(tokenize(kIntro).size());
  p.needle_token = int64_t(tokenize(parts.head).size());
  const int64_t needle_tokens = int64_t(tokenize(needle).size());
  const int64_t question_tokens = int64_t(tokenize(kQuestion).size());
  p.haystack_tokens = p.n_tokens - p.haystack_begin - needle_tokens - question_tokens;
  return p;
}

bool passkey_answer_correct(const std::string& continuation, const std::string& key) {
  size_t i = 0;
  while (i < continuation.size() && !std::isdigit(static_cast<unsigned char>(continuation[i]))) ++i;
  size_t j = i;
  while (j < continuation.size() && std::isdigit(static_cast<unsigned char>(continuation[j]))) ++j;
  return j > i && continuation.compare(i, j - i, key) == 0;
}

}  // namespace aquakv::eval
