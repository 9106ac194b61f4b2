// Tests of eval/logits_file.h: round trip, rejection of corrupt, truncated and mismatched files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "aquakv/eval/logits_file.h"
#include "aquakv/util/error.h"

namespace aquakv::eval {
namespace {

std::string tmp_path(const char* name) {
  return (testing::TempDir() + "/aquakv_") + name + std::to_string(::getpid());
}

std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& p, const std::string& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(b.data(), std::streamsize(b.size()));
}

// Expects an aquakv::Error whose message contains `what`.
template <typename F>
void expect_error(F&& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no Error thrown; expected one mentioning '" << what << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

struct Fixture {
  LogitsRunInfo info;
  std::vector<std::vector<float>> logits;
  std::vector<int64_t> targets;
};

Fixture make_fixture(int64_t V, int64_t ctx, int n_windows) {
  Fixture fx;
  fx.info.model = "toy.gguf";
  fx.info.model_fingerprint = 0x1234;
  fx.info.n_vocab = V;
  fx.info.ctx = ctx;
  fx.info.rows_per_window = ctx - 1;
  fx.info.kv_spec = "fp16";
  fx.info.text = "text.txt";
  std::mt19937_64 rng(7);
  std::normal_distribution<float> g(0, 3);
  for (int w = 0; w < n_windows; ++w) {
    std::vector<int32_t> ids(static_cast<size_t>(ctx));
    for (auto& id : ids) id = int32_t(rng() % uint64_t(V));
    fx.info.window_hashes.push_back(hash_tokens(ids.data(), ctx));
    for (int64_t t = 0; t + 1 < ctx; ++t) {
      std::vector<float> l(static_cast<size_t>(V));
      for (auto& x : l) x = g(rng);
      fx.logits.push_back(l);
      fx.targets.push_back(ids[size_t(t + 1)]);
    }
  }
  return fx;
}

TEST(LogitsFile, RoundTripKeepsEveryField) {
  const Fixture fx = make_fixture(300, 9, 2);
  LogitsFile f(fx.info, 16, 1e-3);
  for (size_t i = 0; i < fx.logits.size(); ++i) f.add_row(fx.logits[i].data(), fx.targets[i]);
  const std::string path = tmp_path("rt");
  f.save(path);
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());  // temp file renamed away
  const LogitsFile g = LogitsFile::load(path);
  EXPECT_EQ(g.k_max(), 16);
  EXPECT_EQ(g.mass_eps(), 1e-3);
  EXPECT_EQ(g.info().n_vocab, 300);
  EXPECT_EQ(g.info().ctx, 9);
  EXPECT_EQ(g.info().model, "toy.gguf");
  EXPECT_EQ(g.info().kv_spec, "fp16");
  EXPECT_EQ(g.info().window_hashes, fx.info.window_hashes);
  ASSERT_EQ(g.n_rows(), f.n_rows());
  for (int64_t i = 0; i < f.n_rows(); ++i) {
    ASSERT_EQ(g.row(i).base_nll, f.row(i).base_nll);
    ASSERT_EQ(g.row(i).p_rest, f.row(i).p_rest);
    ASSERT_EQ(g.row(i).top, f.row(i).top);
  }
  // KL of the base against itself through the file is ~0 (only the tail bucket's rounding).
  EXPECT_LT(kl_divergence_compact(g.row(3), fx.logits[3].data(), 300), 1e-6);
  EXPECT_NEAR(g.base_nll(g.n_rows()).mean(), f.base_nll(f.n_rows()).mean(), 0);
  g.check_compatible(fx.info, path);  // same run: accepted
  std::remove(path.c_str());
}

TEST(LogitsFile, EveryCorruptedByteIsRejected) {
  const Fixture fx = make_fixture(50, 4, 1);
  LogitsFile f(fx.info, 4, 1e-3);
  for (size_t i = 0; i < fx.logits.size(); ++i) f.add_row(fx.logits[i].data(), fx.targets[i]);
  const std::string path = tmp_path("corrupt");
  f.save(path);
  const std::string good = read_bytes(path);
  ASSERT_GT(good.size(), 100u);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = char(bad[i] ^ 0x5a);
    write_bytes(path, bad);
    EXPECT_THROW(LogitsFile::load(path), Error) << "flipped byte " << i;
  }
  std::string bad = good;
  bad[good.size() / 2] ^= 1;
  write_bytes(path, bad);
  expect_error([&] { LogitsFile::load(path); }, "checksum");
  std::remove(path.c_str());
}

TEST(LogitsFile, TruncatedOrMissingFileIsRejected) {
  const Fixture fx = make_fixture(50, 4, 1);
  LogitsFile f(fx.info, 4, 1e-3);
  for (size_t i = 0; i < fx.logits.size(); ++i) f.add_row(fx.logits[i].data(), fx.targets[i]);
  const std::string path = tmp_path("trunc");
  f.save(path);
  const std::string good = read_bytes(path);
  for (size_t n = 0; n < good.size(); ++n) {
    write_bytes(path, good.substr(0, n));
    EXPECT_THROW(LogitsFile::load(path), Error) << "truncated to " << n;
  }
  write_bytes(path, good + "x");
  EXPECT_THROW(LogitsFile::load(path), Error);
  std::remove(path.c_str());
  expect_error([&] { LogitsFile::load(path); }, "cannot open");
}

TEST(LogitsFile, MismatchedRunIsRefusedWithTheReason) {
  const Fixture fx = make_fixture(40, 5, 3);
  LogitsFile f(fx.info, 4, 1e-3);
  for (size_t i = 0; i < fx.logits.size(); ++i) f.add_row(fx.logits[i].data(), fx.targets[i]);
  const std::string p = "base.logits";
  LogitsRunInfo r = fx.info;
  r.model_fingerprint = 99;
  r.model = "other.gguf";
  expect_error([&] { f.check_compatible(r, p); }, "other.gguf");
  r = fx.info;
  r.n_vocab = 41;
  expect_error([&] { f.check_compatible(r, p); }, "n_vocab 40");
  r = fx.info;
  r.ctx = 6;
  r.rows_per_window = 5;
  expect_error([&] { f.check_compatible(r, p); }, "ctx 5 but this run uses -c 6");
  r = fx.info;
  r.window_hashes[1] ^= 1;
  r.text = "other.txt";
  expect_error([&] { f.check_compatible(r, p); }, "window 1 differ");
  r = fx.info;
  r.window_hashes.push_back(5);
  expect_error([&] { f.check_compatible(r, p); }, "--chunks <= 3");
  r = fx.info;
  r.window_hashes.resize(2);  // fewer windows (smaller --chunks): accepted
  f.check_compatible(r, p);
}

TEST(LogitsFile, HashTokensIsOrderSensitive) {
  const int32_t a[3] = {1, 2, 3}, b[3] = {1, 3, 2};
  EXPECT_NE(hash_tokens(a, 3), hash_tokens(b, 3));
  EXPECT_EQ(hash_tokens(a, 3), hash_tokens(a, 3));
  // FNV-1a 64 test vector: "a" -> af63dc4c8601ec8c.
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
}

// A file written by the Python writer (bench/llama_cpp_eval.py, via
// scripts/make_logits_golden.py) from log-probs of a closed formula: the two implementations of
// the format agree byte for byte on what matters.
TEST(LogitsFile, ReadsThePythonWritersGolden) {
  const std::string dir = AQUAKV_TEST_DATA;
  const LogitsFile f = LogitsFile::load(dir + "/logits_golden.bin");
  const int64_t V = 300, ctx = 5;
  ASSERT_EQ(f.info().n_vocab, V);
  ASSERT_EQ(f.info().ctx, ctx);
  ASSERT_EQ(f.n_rows(), ctx - 1);
  EXPECT_EQ(f.info().kv_spec, "llama.cpp f16");
  std::vector<int32_t> window(static_cast<size_t>(ctx));
  for (int64_t t = 0; t < ctx; ++t) window[size_t(t)] = int32_t((7 * t + 3) % V);
  ASSERT_EQ(f.info().window_hashes.size(), 1u);
  EXPECT_EQ(f.info().window_hashes[0], hash_tokens(window.data(), ctx));
  // Model fingerprint: FNV-1a 64 of the u64 size, then the (whole, < 4 MiB) file.
  const std::string model = read_bytes(dir + "/logits_golden_model.bin");
  const uint64_t size = model.size();
  EXPECT_EQ(f.info().model_fingerprint, fnv1a64(model.data(), int64_t(size), fnv1a64(&size, 8)));
  for (int64_t t = 0; t + 1 < ctx; ++t) {
    std::vector<float> l(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) l[size_t(v)] = float(std::sin(0.37 * double(v) + double(t)) * double(3 + t));
    const CompactRow want = compact_row(l.data(), V, window[size_t(t + 1)], f.k_max(), f.mass_eps());
    const CompactRow& got = f.row(t);
    ASSERT_EQ(got.top.size(), want.top.size()) << t;
    for (size_t i = 0; i < got.top.size(); ++i) {
      EXPECT_EQ(got.top[i].first, want.top[i].first) << t << " " << i;
      EXPECT_NEAR(got.top[i].second, want.top[i].second, 2e-6) << t << " " << i;
    }
    EXPECT_NEAR(got.p_rest, want.p_rest, 1e-6 + 1e-5 * want.p_rest);
    EXPECT_NEAR(got.base_nll, want.base_nll, 2e-6);
  }
}

// Finding 7: a file whose checksum is valid but whose numbers are not log-probabilities (NaN,
// positive) made every KL after it nan; such files are refused on load.
TEST(LogitsFile, InsaneNumbersAreRefusedDespiteAValidChecksum) {
  const float nan = std::nanf("");
  struct Case {
    float base_nll, p_rest, logp;
    const char* needle;
  };
  const Case cases[] = {
      {1.0f, 0.1f, nan, "log-probability nan is not a finite value <= 0"},
      {1.0f, 0.1f, 0.5f, "log-probability 0.5 is not a finite value <= 0"},
      {1.0f, 0.1f, -INFINITY, "log-probability -inf"},
      {nan, 0.1f, -1.0f, "base NLL nan"},
      {-1.0f, 0.1f, -1.0f, "base NLL -1"},
      {1.0f, 1.5f, -1.0f, "rest mass 1.5"},
      {1.0f, nan, -1.0f, "rest mass nan"},
  };
  const std::string path = tmp_path("insane");
  for (const Case& c : cases) {
    LogitsRunInfo info;
    info.n_vocab = 8;
    info.ctx = 2;
    info.rows_per_window = 1;
    info.window_hashes = {1};
    LogitsFile f(info, 4, 1e-4);
    CompactRow row;
    row.base_nll = c.base_nll;
    row.p_rest = c.p_rest;
    row.top = {{3u, c.logp}};
    f.add_row(row);
    f.save(path);  // the writer does not judge; the reader must
    expect_error([&] { LogitsFile::load(path); }, c.needle);
  }
  // The boundary values are sane: log p = 0 (p = 1), rest mass 0.
  LogitsRunInfo info;
  info.n_vocab = 8;
  info.ctx = 2;
  info.rows_per_window = 1;
  info.window_hashes = {1};
  LogitsFile f(info, 4, 1e-4);
  f.add_row(CompactRow{0.0f, 0.0f, {{3u, 0.0f}}});
  f.save(path);
  EXPECT_EQ(LogitsFile::load(path).n_rows(), 1);
  std::remove(path.c_str());
}

// Files written from the documented layout by another implementation (Python,
// scripts/make_fuzz_seeds.py), which seed the fuzz corpus.
TEST(LogitsFile, ReadsTheSeedCorpus) {
  const std::string dir = std::string(AQUAKV_TEST_DATA) + "/../../fuzz/corpus/logits/";
  const LogitsFile f = LogitsFile::load(dir + "small.lgts");
  EXPECT_EQ(f.info().n_vocab, 16);
  EXPECT_EQ(f.n_rows(), 6);
  EXPECT_NEAR(f.row(0).top[0].second, std::log(0.5f), 1e-6);
  EXPECT_NEAR(f.row(0).p_rest, 0.125f, 1e-7);
  EXPECT_EQ(LogitsFile::load(dir + "one_window_k1.lgts").n_rows(), 1);
}

TEST(LogitsFile, DirectoryIsNamed) {
  expect_error([] { LogitsFile::load(testing::TempDir()); }, "is a directory");
}

}  // namespace
}  // namespace aquakv::eval
