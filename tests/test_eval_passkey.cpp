// Tests of eval/passkey.h with toy tokenizers: length targets met, key at the requested depth.
#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "aquakv/eval/passkey.h"
#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

// Word-level toy: a token is a run of letters, a single digit, or a single other non-space
// character (spaces are dropped). Ids come from a growing dictionary so they can be decoded.
struct WordTokenizer {
  std::map<std::string, int32_t> ids;
  std::vector<std::string> pieces;
  std::vector<int32_t> operator()(const std::string& s) {
    std::vector<int32_t> out;
    size_t i = 0;
    while (i < s.size()) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (std::isspace(c)) { ++i; continue; }
      size_t j = i + 1;
      if (std::isalpha(c))
        while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(id(s.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  int32_t id(const std::string& p) {
    auto [it, inserted] = ids.emplace(p, int32_t(pieces.size()));
    if (inserted) pieces.push_back(p);
    return it->second;
  }
};

std::vector<int32_t> char_tokenize(const std::string& s) {
  return std::vector<int32_t>(s.begin(), s.end());
}

TEST(Passkey, KeyIsSeededAndFiveDigits) {
  std::set<std::string> keys;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const std::string k = passkey_for_seed(seed, 5);
    ASSERT_EQ(k.size(), 5u);
    ASSERT_NE(k[0], '0');
    EXPECT_EQ(k, passkey_for_seed(seed, 5));
    keys.insert(k);
  }
  EXPECT_GT(keys.size(), 190u);  // 200 draws from 90000 values: collisions are rare
}

TEST(Passkey, LengthTargetsAndDepthWithWordTokenizer) {
  WordTokenizer tok;
  TokenizeFn fn = [&](const std::string& s) { return tok(s); };
  const int64_t unit = int64_t(tok(" The grass is green. The sky is blue. The sun is yellow. "
                                   "Here we go. There and back again.").size());
  for (int64_t target : {120, 500, 2000, 8000}) {
    for (double depth : {0.0, 0.1, 0.25, 0.5, 0.9, 1.0}) {
      const PasskeyPrompt p = make_passkey_prompt(fn, target, depth, 42 + uint64_t(target));
      const auto ids = tok(p.text);
      ASSERT_EQ(int64_t(ids.size()), p.n_tokens);
      EXPECT_LE(p.n_tokens, target);
      EXPECT_GT(p.n_tokens, target - unit) << target;
      // The needle really starts at needle_token: "The pass key is" then the key's digits.
      const std::vector<std::string> want{"The", "pass", "key", "is"};
      for (size_t w = 0; w < want.size(); ++w)
        ASSERT_EQ(tok.pieces[size_t(ids[size_t(p.needle_token) + w])], want[w]) << target;
      for (size_t d = 0; d < p.key.size(); ++d)
        ASSERT_EQ(tok.pieces[size_t(ids[size_t(p.needle_token) + 4 + d])], p.key.substr(d, 1));
      // Depth within half a filler unit (the needle goes between units).
      EXPECT_NEAR(p.depth(), depth, 0.5 * double(unit) / double(p.haystack_tokens) + 1e-12)
          << target << " " << depth;
      EXPECT_NE(p.text.find(p.key), std::string::npos);
    }
  }
}

TEST(Passkey, CharTokenizerAndDepthOrdering) {
  TokenizeFn fn = char_tokenize;
  double last = -1;
  for (double depth : {0.0, 0.3, 0.6, 1.0}) {
    const PasskeyPrompt p = make_passkey_prompt(fn, 6000, depth, 7);
    EXPECT_LE(p.n_tokens, 6000);
    EXPECT_GT(p.n_tokens, 6000 - 100);
    EXPECT_EQ(p.text.compare(size_t(p.needle_token), 16, " The pass key is"), 0);
    EXPECT_GT(p.depth(), last);
    EXPECT_NEAR(p.depth(), depth, 0.01);
    last = p.depth();
  }
}

TEST(Passkey, RejectsImpossibleRequests) {
  TokenizeFn fn = char_tokenize;
  EXPECT_THROW(make_passkey_prompt(fn, 50, 0.5, 1), Error);
  EXPECT_THROW(make_passkey_prompt(fn, 5000, 1.5, 1), Error);
  EXPECT_THROW(make_passkey_prompt(fn, 5000, -0.1, 1), Error);
}

TEST(Passkey, AnswerScoring) {
  EXPECT_TRUE(passkey_answer_correct(" 48213. Remember", "48213"));
  EXPECT_TRUE(passkey_answer_correct("48213", "48213"));
  EXPECT_FALSE(passkey_answer_correct(" 482130", "48213"));
  EXPECT_FALSE(passkey_answer_correct(" 4821", "48213"));
  EXPECT_FALSE(passkey_answer_correct(" 12345 48213", "48213"));
  EXPECT_FALSE(passkey_answer_correct(" no digits", "48213"));
}

}  // namespace
}  // namespace aquakv::eval
