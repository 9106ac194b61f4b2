// Tests of saved sequence states and session files (kv/kv_state.h, kv/session_file.h) on caches
// fed random keys, values and queries (no model): for every format, a sequence saved, loaded
// into a fresh cache and continued gives the same attention outputs bit for bit as the one
// that never left memory; truncation keeps a prefix exactly; a state moved from AQUA-KV into
// fp16 stays within the bound of fp16 rounding; damaged, foreign and mismatched files are
// refused with one line; a failed save leaves nothing behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/kv/session_file.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;
constexpr int kL = 3, kH = 3, kHd = 64, kC = kH * kHd, kQHeads = 6;

KvShape shape() {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 1024;
  s.arch = "llama";
  s.model_hash = 0x1234abcdULL;
  s.rope.n_rot = kHd;
  s.rope.freq_base = 10000.0;
  return s;
}

std::string tmp_path(const std::string& tag) {
  return (fs::temp_directory_path() / ("aqkv_sess_" + tag + "_" + std::to_string(getpid()))).string();
}

// Predictors with random weights for the test shape, saved where an aquakv spec can load them.
std::string random_adapters(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 0.5f / std::sqrt(float(kC)));
  Adapters a;
  const KvShape s = shape();
  a.model = {s.arch, kL, kH, kHd, kC, s.model_hash};
  a.quant = aquakv_quant_config("higgs2", "higgs2", "higgs4", kC);
  a.layers.resize(kL);
  for (int l = 1; l < kL; ++l) {
    for (auto [m, in] : {std::pair{&a.layers[size_t(l)].key, kC}, std::pair{&a.layers[size_t(l)].value, 2 * kC}}) {
      m->in = in;
      m->out = kC;
      m->w.resize(size_t(in * kC));
      m->bias.resize(kC);
      for (auto& e : m->w) e = g(rng);
      for (auto& e : m->bias) e = g(rng);
    }
  }
  const std::string path = tmp_path("adapters" + std::to_string(seed));
  save_adapters(a, path);
  return path;
}

// Random inputs of a stretch of steps: keys, values and queries per step and layer.
struct Inputs {
  std::vector<int64_t> steps;
  std::vector<std::vector<float>> k, v, q;  // [step * kL + layer]
};

Inputs make_inputs(std::vector<int64_t> steps, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  Inputs in;
  in.steps = std::move(steps);
  for (int64_t n : in.steps) {
    for (int l = 0; l < kL; ++l) {
      for (auto* x : {&in.k, &in.v}) {
        x->emplace_back(size_t(n * kC));
        for (auto& e : x->back()) e = g(rng);
      }
      in.q.emplace_back(size_t(n * kQHeads * kHd));
      for (auto& e : in.q.back()) e = g(rng);
    }
  }
  return in;
}

// Feeds the steps to sequence `seq`, attending on every layer; returns all attention outputs.
std::vector<float> feed(KvCache& c, int seq, const Inputs& in) {
  std::vector<float> outs;
  for (size_t s = 0; s < in.steps.size(); ++s) {
    const int64_t n = in.steps[s];
    c.begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      const size_t i = s * kL + size_t(l);
      c.append(l, in.k[i].data(), in.v[i].data());
      std::vector<float> out(size_t(n * kQHeads * kHd));
      KvAttention a;
      a.n = n;
      a.q = in.q[i].data();
      a.out = out.data();
      a.n_heads = kQHeads;
      a.scale = 1.0f / std::sqrt(float(kHd));
      c.attend(l, a);
      outs.insert(outs.end(), out.begin(), out.end());
    }
    c.end_step();
  }
  return outs;
}

std::vector<int32_t> ids(int64_t n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = int32_t(7 * i + 3);
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { adapters_ = new std::string(random_adapters(1)); }
  static void TearDownTestSuite() {
    fs::remove(*adapters_);
    delete adapters_;
  }
  void TearDown() override {
    for (const auto& p : files_) fs::remove(p);
  }
  std::string file(const std::string& tag) {
    files_.push_back(tmp_path(tag));
    return files_.back();
  }
  static std::vector<std::string> specs() {
    return {"fp16", "f32", "q8_0", "q4_0", "kivi2", "higgs2", "higgs3,p=2,b=16",
            "aquakv:" + *adapters_ + ",p=4,b=64"};
  }
  static std::string* adapters_;
  std::vector<std::string> files_;
};
std::string* SessionTest::adapters_ = nullptr;

TEST_F(SessionTest, EveryFormatContinuesBitForBitAfterALoad) {
  const Inputs before = make_inputs({100, 37, 1, 1, 64, 97}, 1);  // 300 tokens
  const Inputs after = make_inputs({1, 1, 1, 7, 1, 40, 1}, 2);
  for (const bool zstd : {false, true}) {
    for (const std::string& spec : specs()) {
      SCOPED_TRACE(spec + (zstd ? " (zstd)" : ""));
      auto a = make_cache(spec, shape());
      const int sa = a->add_sequence();
      feed(*a, sa, before);
      const std::string path = file("cont");
      SessionSaveOptions opt;
      opt.zstd = zstd;
      save_session(path, *a, sa, ids(300), {}, opt);
      const int64_t live = a->live_bytes();
      const std::vector<float> want = feed(*a, sa, after);

      auto b = make_cache(spec, shape());
      b->add_sequence();  // load into the second sequence: ids need not match
      const int sb = b->add_sequence();
      const auto f = SessionFile::open(path);
      EXPECT_EQ(f->info().tokens, ids(300));
      EXPECT_EQ(f->info().kv_spec, a->name());
      f->load_into(*b, sb);
      EXPECT_EQ(b->n_tokens(sb), 300);
      EXPECT_EQ(b->live_bytes(), live);
      EXPECT_TRUE(same_bits(feed(*b, sb, after), want));
      EXPECT_EQ(b->n_tokens(sb), a->n_tokens(sa));
    }
  }
}

TEST_F(SessionTest, SlidingWindowLayersSaveLoadAndMove) {
  // Gemma-style: layer 1 keeps a window of 16 positions, the others are global. The plain cache
  // has dropped rows outside the window; its state says so, loads back bit for bit, moves into
  // another format (the dropped rows are never seen again), and cannot be cut back to a
  // position whose window rows are gone.
  KvShape s = shape();
  s.window = {0, 16, 0};
  const Inputs before = make_inputs({60, 1, 1, 30}, 13);
  const Inputs after = make_inputs({1, 1, 4}, 14);
  auto a = make_cache("fp16", s);
  const int sa = a->add_sequence();
  feed(*a, sa, before);
  const std::string path = file("window");
  save_session(path, *a, sa, ids(92), {});
  auto b = make_cache("fp16", s);
  const int sb = b->add_sequence();
  SessionFile::open(path)->load_into(*b, sb);
  EXPECT_EQ(b->live_bytes(), a->live_bytes());
  auto q = make_cache("q8_0", s);
  const int sq = q->add_sequence();
  copy_sequence(*b, sb, *q, sq);
  EXPECT_EQ(q->n_tokens(sq), 92);
  const auto want = feed(*a, sa, after);
  EXPECT_TRUE(same_bits(feed(*b, sb, after), want));
  feed(*q, sq, after);
  // Layer 1 holds positions 83..97 (what the query at 98 sees): a cut to 97 would need 82.
  EXPECT_EQ(b->truncate(sb, 98), 98);
  EXPECT_EQ(b->truncate(sb, 97), 0);
  EXPECT_EQ(b->n_tokens(sb), 0);
  auto g = make_cache("fp16", shape());  // the same on a cache without windows cuts anywhere
  const int sg = g->add_sequence();
  feed(*g, sg, before);
  EXPECT_EQ(g->truncate(sg, 40), 40);
}

TEST_F(SessionTest, TruncatedSequenceEqualsTheShorterOne) {
  // 300 tokens, truncated to 200, continued; against 200 tokens fed in the same steps as far
  // as they go. Formats whose state at 200 tokens is the same either way (per-row codes, or
  // AQUA-KV whose 200 = 4 sinks + 196 coded rows in both histories) must agree bit for bit.
  const Inputs first = make_inputs({100, 100}, 3);
  const Inputs more = make_inputs({100}, 4);
  const Inputs after = make_inputs({1, 1, 5, 1}, 5);
  for (const std::string& spec : {std::string("fp16"), std::string("q4_0"), std::string("higgs2,p=4,b=16"),
                                  "aquakv:" + *adapters_ + ",p=4,b=128"}) {
    SCOPED_TRACE(spec);
    auto a = make_cache(spec, shape());
    const int sa = a->add_sequence();
    feed(*a, sa, first);
    feed(*a, sa, more);
    auto b = make_cache(spec, shape());
    const int sb = b->add_sequence();
    feed(*b, sb, first);
    const int64_t kept = a->truncate(sa, 200);
    if (spec == "higgs2,p=4,b=16") {
      // Coded rows are kept whole, the buffer is not: 4 sinks + 192 coded after the first
      // step (b=16 codes the buffer in full), + 4 of the second step's coded rows.
      EXPECT_EQ(kept, 200);
    }
    ASSERT_EQ(kept, 200);
    EXPECT_EQ(a->n_tokens(sa), 200);
    EXPECT_EQ(a->live_bytes(), b->live_bytes());
    EXPECT_TRUE(same_bits(feed(*a, sa, after), feed(*b, sb, after)));
  }
}

TEST_F(SessionTest, TruncationKeepsWholeCodecBlocks) {
  // KIVI codes keys over 32-token blocks: a cut inside coded rows falls back to a block edge.
  auto c = make_cache("kivi2,p=0,b=32", shape());
  const int s = c->add_sequence();
  feed(*c, s, make_inputs({128, 64}, 6));  // every row coded (b = 32)
  EXPECT_EQ(c->truncate(s, 150), 128);
  EXPECT_EQ(c->n_tokens(s), 128);
  EXPECT_EQ(c->truncate(s, 500), 128);  // nothing to cut
  feed(*c, s, make_inputs({1, 3}, 7));  // and it goes on
  EXPECT_EQ(c->n_tokens(s), 132);
}

// Largest |x| of a vector.
float max_abs(const std::vector<float>& x) {
  float m = 0;
  for (float e : x) m = std::max(m, std::fabs(e));
  return m;
}

TEST_F(SessionTest, AquakvMovedIntoFp16StaysWithinFp16Rounding) {
  // The fp16 cache holds the AQUA-KV reconstruction rounded to fp16 (relative error u = 2^-11
  // per element; keys rounded after RoPE, a rotation, so ||dk|| <= u ||k||, and the appended
  // rows' keys are rounded before (AQUA-KV buffer) or after (fp16) RoPE: <= 2u ||k||). A score
  // moves by at most D = scale ||q|| 2u max||k||, so softmax weights by a factor within
  // e^{+-2D}, and an output by at most (e^{2D} - 1) max|v| + u max|v| (+ f32 summation noise).
  const std::string spec = "aquakv:" + *adapters_ + ",p=4,b=64";
  const Inputs before = make_inputs({200, 100}, 8);
  const Inputs after = make_inputs({1, 1, 1}, 9);
  auto a = make_cache(spec, shape());
  const int sa = a->add_sequence();
  feed(*a, sa, before);
  const std::string path = file("move");
  save_session(path, *a, sa, ids(300), {});
  auto src = make_cache(spec, shape());
  const int ss = src->add_sequence();
  SessionFile::open(path)->load_into(*src, ss);
  auto h = make_cache("fp16", shape());
  const int sh = h->add_sequence();
  copy_sequence(*src, ss, *h, sh);
  EXPECT_EQ(h->n_tokens(sh), 300);
  // Row norms of what attention reads: the AQUA-KV reconstruction (a zero-token step's view).
  float kmax = 0, vmax = 0;
  src->begin_step(ss, 0);
  for (int l = 0; l < kL; ++l) {
    const KvView view = src->read(l);
    const float* k = static_cast<const float*>(view.k);
    const float* v = static_cast<const float*>(view.v);
    for (int64_t r = 0; r < view.n_tokens * kH; ++r) {
      double n2 = 0;
      for (int i = 0; i < kHd; ++i) n2 += double(k[r * kHd + i]) * k[r * kHd + i];
      kmax = std::max(kmax, float(std::sqrt(n2)));
    }
    for (int64_t i = 0; i < view.n_tokens * kC; ++i) vmax = std::max(vmax, std::fabs(v[i]));
  }
  src->end_step();
  for (const auto& x : after.k) kmax = std::max(kmax, float(std::sqrt(double(kHd))) * max_abs(x));
  for (const auto& x : after.v) vmax = std::max(vmax, max_abs(x));
  float qmax = 0;
  for (const auto& q : after.q)
    for (size_t r = 0; r < q.size() / kHd; ++r) {
      double n2 = 0;
      for (int i = 0; i < kHd; ++i) n2 += double(q[r * kHd + i]) * q[r * kHd + i];
      qmax = std::max(qmax, float(std::sqrt(n2)));
    }
  const double u = std::ldexp(1.0, -11);
  const double D = (1.0 / std::sqrt(double(kHd))) * qmax * 2 * u * kmax;
  const double bound = (std::exp(2 * D) - 1) * vmax + u * vmax + 1e-5;
  const auto want = feed(*a, sa, after);
  const auto got = feed(*h, sh, after);
  ASSERT_EQ(want.size(), got.size());
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(want[i] - got[i])));
  EXPECT_LE(worst, bound);
  EXPECT_GT(worst, 0.0);  // the two caches do differ: fp16 rounding
  // And the other way: fp16 -> AQUA-KV encodes on the way in.
  auto back = make_cache(spec, shape());
  const int sk = back->add_sequence();
  copy_sequence(*h, sh, *back, sk);
  EXPECT_EQ(back->n_tokens(sk), h->n_tokens(sh));
  EXPECT_LT(back->live_bytes(), h->live_bytes() / 3);
}

TEST_F(SessionTest, RefusesDamagedForeignAndMismatchedFiles) {
  auto a = make_cache("q4_0", shape());
  const int sa = a->add_sequence();
  feed(*a, sa, make_inputs({50}, 10));
  const std::string path = file("good");
  save_session(path, *a, sa, ids(50), std::vector<float>(11, 0.5f));
  const std::string good = read_file(path, "", ReadKind::kData);
  auto expect_refused = [&](const std::string& bytes, const std::string& needle) {
    SCOPED_TRACE(needle);
    const std::string bad = file("bad");
    std::ofstream(bad, std::ios::binary) << bytes;
    try {
      auto c = make_cache("q4_0", shape());
      SessionFile::open(bad)->load_into(*c, c->add_sequence());
      ADD_FAILURE() << "not refused";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(needle), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  };
  expect_refused(good.substr(0, good.size() - 1), "truncated");
  expect_refused(good.substr(0, 100), "truncated");
  expect_refused(good + "x", "unexpected bytes");
  expect_refused("AQKVADPT" + good.substr(8), "not an aquakv session file");
  std::string flip = good;
  flip[flip.size() - 10] ^= 1;  // inside the last section
  expect_refused(flip, "checksum mismatch");
  flip = good;
  flip[40] ^= 1;  // inside the header
  expect_refused(flip, "checksum mismatch");

  // Another model (fingerprint), another shape, another format, another context.
  const auto f = SessionFile::open(path);
  KvShape other = shape();
  other.model_hash ^= 1;
  EXPECT_THROW(f->check_model(other), Error);
  try {
    auto c = make_cache("q4_0", other);
    f->load_into(*c, c->add_sequence());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
  try {
    auto c = make_cache("q8_0", shape());
    f->load_into(*c, c->add_sequence());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stored as"), std::string::npos) << e.what();
  }
  KvShape small = shape();
  small.max_tokens = 20;
  EXPECT_THROW(f->check_model(small), Error);
  EXPECT_EQ(f->info().logits, std::vector<float>(11, 0.5f));
}

TEST_F(SessionTest, RefusesAStateSavedWithOtherAdapters) {
  const std::string other = random_adapters(2);
  auto a = make_cache("aquakv:" + other + ",p=4,b=64", shape());
  const int sa = a->add_sequence();
  feed(*a, sa, make_inputs({100}, 11));
  const std::string path = file("adapt");
  save_session(path, *a, sa, ids(100), {});
  // The adapter file at the path is replaced by a recalibrated one.
  fs::copy_file(*adapters_, other, fs::copy_options::overwrite_existing);
  auto b = make_cache("aquakv:" + other + ",p=4,b=64", shape());
  try {
    SessionFile::open(path)->load_into(*b, b->add_sequence());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adapters of checksum"), std::string::npos) << e.what();
  }
  fs::remove(other);
}

TEST_F(SessionTest, AFailedSaveLeavesNothingBehind) {
  auto a = make_cache("fp16", shape());
  const int sa = a->add_sequence();
  feed(*a, sa, make_inputs({10}, 12));
  const std::string dir = tmp_path("dir");
  fs::create_directory(dir);
  EXPECT_THROW(save_session(dir + "/s.aqss", *a, sa, ids(9), {}), Error);  // wrong token count
  EXPECT_THROW(save_session(dir + "/missing/s.aqss", *a, sa, ids(10), {}), Error);
  EXPECT_THROW(save_session(dir, *a, sa, ids(10), {}), Error);  // a directory
  EXPECT_TRUE(fs::is_empty(dir));
  save_session(dir + "/s.aqss", *a, sa, ids(10), {});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

// The fuzz seeds written by scripts/make_fuzz_seeds.py from docs/SESSIONS.md alone (a mode
// byte, then the file): the reader accepts them and the loaded rows are the ones the script
// wrote, so the documented layout and the C++ reader agree independently of the C++ writer.
std::string spec_file(const std::string& name) {
  const std::string b = read_file(std::string(AQUAKV_TEST_DATA) + "/../../fuzz/corpus/session/" + name, "", ReadKind::kData);
  return b.substr(1);
}

KvShape spec_shape() {
  KvShape s;
  s.n_layers = 2;
  s.n_kv_heads = 1;
  s.head_dim = 32;
  s.max_tokens = 64;
  s.arch = "llama";
  s.model_hash = 0x0123456789ABCDEFull;
  return s;
}

TEST(SessionSpec, ReadsFilesWrittenToTheDocumentedSpec) {
  for (const std::string kind : {"fp16", "q8_0"}) {
    SCOPED_TRACE(kind);
    const std::string bytes = spec_file(kind + "_spec.aqss");
    const auto f = SessionFile::parse({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, kind);
    EXPECT_EQ(f->info().tokens, (std::vector<int32_t>{100, 101, 102, 103, 104}));
    EXPECT_EQ(f->info().logits, (std::vector<float>{0.5f, -1.0f, 2.0f, 0.25f}));
    auto c = make_cache(kind == "fp16" ? "fp16" : "q8_0", spec_shape());
    const int seq = c->add_sequence();
    f->load_into(*c, seq);
    ASSERT_EQ(c->n_tokens(seq), 5);
    c->begin_step(seq, 0);
    for (int l = 0; l < 2; ++l) {
      const KvView v = c->read(l);
      ASSERT_EQ(v.n_tokens, 5);
      for (int64_t r = 0; r < 5; ++r)
        for (int i = 0; i < 32; ++i) {
          const int64_t at = r * v.row_stride + i;
          const float k = v.dtype == KvDtype::F16 ? fp16_to_fp32(static_cast<const uint16_t*>(v.k)[at]) : static_cast<const float*>(v.k)[at];
          const float x = v.dtype == KvDtype::F16 ? fp16_to_fp32(static_cast<const uint16_t*>(v.v)[at]) : static_cast<const float*>(v.v)[at];
          if (kind == "fp16") {
            EXPECT_EQ(k, float((r + 3 * l + i) % 7 - 3) / 4);
            EXPECT_EQ(x, float((r + 3 * l + i) % 7 - 3) / 4 + 0.125f);
          } else {
            EXPECT_EQ(k, 0.5f * float((r + 3 * l + i) % 7 - 3));
            EXPECT_EQ(x, 0.5f * float((r + 3 * l + i) % 5 - 2));
          }
        }
    }
    c->end_step();
  }
}

TEST(SessionSpec, TheWriterFollowsTheSameLayout) {
  // Load the script's fp16 file, save it again with the C++ writer: same bytes.
  const std::string bytes = spec_file("fp16_spec.aqss");
  const auto f = SessionFile::parse({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "spec");
  KvShape s = spec_shape();
  auto c = make_cache("fp16", s);
  const int seq = c->add_sequence();
  f->load_into(*c, seq);
  const std::string path = tmp_path("resave");
  // The header records the saving cache's context: the script wrote 64, as the shape says.
  save_session(path, *c, seq, f->info().tokens, f->info().logits);
  EXPECT_EQ(read_file(path, "", ReadKind::kData), bytes);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace aquakv
