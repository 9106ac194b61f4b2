// Tests of kv/adapters: exact round trip (f32), f16 rounding, and every refusal of the loader
// (bad magic, version, truncation, trailing bytes, corruption, another model, another quantizer
// configuration), each checked by the message naming what does not match.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

AffineMap random_map(int64_t in, int64_t out, int64_t rank, std::mt19937& rng) {
  std::normal_distribution<float> g(0, 1);
  AffineMap m;
  m.in = in;
  m.out = out;
  m.rank = rank;
  if (rank == 0) m.w.resize(size_t(in * out)); else { m.u.resize(size_t(in * rank)); m.v.resize(size_t(rank * out)); }
  m.bias.resize(size_t(out));
  for (auto* v : {&m.w, &m.u, &m.v, &m.bias})
    for (auto& e : *v) e = g(rng);
  return m;
}

Adapters sample(int64_t rank = 0) {
  std::mt19937 rng(42);
  Adapters a;
  a.model = {"llama", 4, 2, 8, 16, 0x1234abcdull};
  a.quant = {"higgs:d=2,n=16,g=16", "higgs:d=2,n=16,g=16", "f16", 16, 0};
  a.rank = rank;
  a.notes = "{\"tokens\": 100}";
  a.layers.resize(4);
  for (int l = 1; l < 4; ++l) {
    a.layers[size_t(l)].key = random_map(16, 16, rank, rng);
    if (l != 2) a.layers[size_t(l)].value = random_map(32, 16, rank, rng);  // layer 2: keys only
  }
  return a;
}

struct TmpDir {
  fs::path dir = fs::temp_directory_path() / ("aquakv_adapters_" + std::to_string(getpid()));
  TmpDir() { fs::create_directories(dir); }
  ~TmpDir() { fs::remove_all(dir); }
  std::string file(const char* n) const { return (dir / n).string(); }
};

std::vector<char> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void spit(const std::string& p, const std::vector<char>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), std::streamsize(b.size()));
}

// Expects load (and match check) to throw an Error whose message contains `needle`.
void expect_refused(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "accepted; expected a refusal mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void expect_same_map(const AffineMap& a, const AffineMap& b) {
  EXPECT_EQ(a.in, b.in);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.w, b.w);
  EXPECT_EQ(a.u, b.u);
  EXPECT_EQ(a.v, b.v);
  EXPECT_EQ(a.bias, b.bias);
}

TEST(Adapters, RoundTripF32IsExact) {
  TmpDir t;
  for (int64_t rank : {0, 3}) {
    const Adapters a = sample(rank);
    save_adapters(a, t.file("a.bin"));
    const Adapters b = load_adapters(t.file("a.bin"));
    EXPECT_EQ(b.model.arch, "llama");
    EXPECT_EQ(b.model.meta_hash, a.model.meta_hash);
    EXPECT_EQ(b.quant.key_codec, a.quant.key_codec);
    EXPECT_EQ(b.quant.layer0_codec, "f16");
    EXPECT_EQ(b.rank, rank);
    EXPECT_EQ(b.notes, a.notes);
    ASSERT_EQ(b.layers.size(), 4u);
    EXPECT_TRUE(b.layers[0].key.empty());
    EXPECT_TRUE(b.layers[2].value.empty());
    for (size_t l = 1; l < 4; ++l) {
      expect_same_map(a.layers[l].key, b.layers[l].key);
      expect_same_map(a.layers[l].value, b.layers[l].value);
    }
    check_adapters_match(b, a.model, a.quant, "x");  // no throw
  }
  // No temporary file is left behind.
  int n = 0;
  for (auto& e : fs::directory_iterator(t.dir)) { (void)e; ++n; }
  EXPECT_EQ(n, 1);
}

TEST(Adapters, F16StorageRoundsEachWeight) {
  TmpDir t;
  Adapters a = sample();
  a.dtype = AdapterDtype::kF16;
  save_adapters(a, t.file("h.bin"));
  const Adapters b = load_adapters(t.file("h.bin"));
  const auto& w0 = a.layers[1].key.w;
  const auto& w1 = b.layers[1].key.w;
  for (size_t i = 0; i < w0.size(); ++i) ASSERT_EQ(w1[i], fp16_to_fp32(fp32_to_fp16(w0[i])));
  save_adapters(sample(), t.file("f.bin"));
  EXPECT_LT(fs::file_size(t.file("h.bin")), fs::file_size(t.file("f.bin")) * 6 / 10);
}

// Maps with the wide inputs (key 2C, value 3C) round-trip as version 4; the same bytes labelled
// version 3 (checksum recomputed) are refused, naming the map's shape.
TEST(Adapters, WideInputMapsNeedVersion4) {
  TmpDir t;
  std::mt19937 rng(7);
  Adapters a = sample();
  EXPECT_FALSE(a.has_wide_inputs());
  a.layers[1].key = random_map(32, 16, 0, rng);
  a.layers[3].value = random_map(48, 16, 0, rng);
  EXPECT_TRUE(a.has_wide_inputs());
  const std::string p = t.file("w.bin");
  save_adapters(a, p);
  std::vector<char> b = slurp(p);
  EXPECT_EQ(b[8], 4);
  const Adapters c = load_adapters(p);
  expect_same_map(a.layers[1].key, c.layers[1].key);
  expect_same_map(a.layers[3].value, c.layers[3].value);
  b[8] = 3;
  const uint64_t sum = fnv1a64(b.data(), int64_t(b.size() - 8));
  std::memcpy(b.data() + b.size() - 8, &sum, 8);
  spit(p, b);
  expect_refused([&] { load_adapters(p); }, "key predictor is 32x16");
  // A map of any other width is refused at version 4 too.
  a.layers[1].key = random_map(48, 16, 0, rng);
  save_adapters(a, p);
  expect_refused([&] { load_adapters(p); }, "expected (16 or 32)x16");
}

TEST(Adapters, RefusesDamagedFiles) {
  TmpDir t;
  const std::string p = t.file("a.bin");
  save_adapters(sample(), p);
  const std::vector<char> good = slurp(p);
  auto load = [&] { load_adapters(p); };

  std::vector<char> b = good;
  b[0] = 'X';
  spit(p, b);
  expect_refused(load, "bad magic");

  b = good;
  b[8] = 5;  // version
  spit(p, b);
  expect_refused(load, "format version 5");

  for (size_t cut : {size_t(10), size_t(30), good.size() / 2, good.size() - 1}) {
    b.assign(good.begin(), good.begin() + std::ptrdiff_t(cut));
    spit(p, b);
    expect_refused(load, "truncated");
  }

  b = good;
  b.push_back(0);
  spit(p, b);
  expect_refused(load, "unexpected bytes");

  for (size_t at : {size_t(40), good.size() / 2, good.size() - 20, good.size() - 3}) {
    b = good;
    b[at] = char(b[at] ^ 0x10);
    spit(p, b);
    expect_refused(load, "checksum mismatch");
  }

  expect_refused([&] { load_adapters(t.file("missing.bin")); }, "cannot open");
  spit(p, good);
  load_adapters(p);  // intact again: accepted
}

TEST(Adapters, RefusesAnotherModelOrQuantizer) {
  TmpDir t;
  const Adapters a = sample();
  save_adapters(a, t.file("a.bin"));
  const Adapters b = load_adapters(t.file("a.bin"));
  struct Case { std::function<void(ModelFingerprint&, AdapterQuantConfig&)> edit; const char* needle; };
  const Case cases[] = {
      {[](auto& m, auto&) { m.arch = "qwen2"; }, "architecture 'llama', the model is 'qwen2'"},
      {[](auto& m, auto&) { m.n_layers = 5; }, "made for 4 layers, the model has 5"},
      {[](auto& m, auto&) { m.n_kv_heads = 4; }, "KV heads"},
      {[](auto& m, auto&) { m.head_dim = 4; }, "head dim"},
      {[](auto& m, auto&) { m.kv_width = 32; }, "KV width"},
      {[](auto& m, auto&) { m.meta_hash ^= 1; }, "another model"},
      {[](auto&, auto& q) { q.key_codec = "higgs:d=2,n=64,g=16"; }, "key codec"},
      {[](auto&, auto& q) { q.value_codec = "higgs:d=2,n=64,g=16"; }, "value codec"},
      {[](auto&, auto& q) { q.layer0_codec = "higgs:d=2,n=256,g=16"; }, "layer-0 policy"},
      {[](auto&, auto& q) { q.group_size = 32; }, "group size"},
      {[](auto&, auto& q) { q.signs_seed = 7; }, "signs seed"},
  };
  for (const auto& c : cases) {
    ModelFingerprint m = a.model;
    AdapterQuantConfig q = a.quant;
    c.edit(m, q);
    expect_refused([&] { check_adapters_match(b, m, q, "a.bin"); }, c.needle);
  }
}

TEST(Adapters, FailedWriteLeavesNoFile) {
  TmpDir t;
  const std::string p = (t.dir / "no_such_dir" / "a.bin").string();
  expect_refused([&] { save_adapters(sample(), p); }, "does not exist");
  EXPECT_FALSE(fs::exists(p));
  // An existing file is replaced whole: old or new content, never a mix.
  const std::string q = t.file("b.bin");
  save_adapters(sample(0), q);
  save_adapters(sample(2), q);
  EXPECT_EQ(load_adapters(q).rank, 2);
}

// FNV-1a 64 written out from its published definition (offset basis 14695981039346656037,
// prime 1099511628211), independent of util/hash.h.
uint64_t spec_fnv1a64(const char* p, size_t n, uint64_t h = 14695981039346656037ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ uint8_t(p[i])) * 1099511628211ull;
  return h;
}

void put_checksum(std::vector<char>& b, uint64_t h) { std::memcpy(b.data() + b.size() - 8, &h, 8); }

// Finding 9: the checksum is FNV-1a 64 as docs/ADAPTERS.md says (version 2).
TEST(Adapters, ChecksumIsFnv1a64AsPublished) {
  TmpDir t;
  const std::string p = t.file("a.bin");
  save_adapters(sample(), p);
  const std::vector<char> b = slurp(p);
  uint32_t version;
  std::memcpy(&version, b.data() + 8, 4);
  EXPECT_EQ(version, 2u);
  uint64_t stored;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  EXPECT_EQ(stored, spec_fnv1a64(b.data(), b.size() - 8));
}

// Files written from the documentation by another implementation (scripts/make_fuzz_seeds.py,
// Python): version 2 with FNV-1a 64, version 1 with the old start value; both are read.
TEST(Adapters, ReadsFilesWrittenToTheDocumentedSpec) {
  const std::string dir = std::string(AQUAKV_TEST_DATA) + "/../../fuzz/corpus/adapters/";
  for (const char* name : {"v2_spec.aqkv", "v1_spec.aqkv"}) {
    SCOPED_TRACE(name);
    const Adapters a = load_adapters(dir + name);
    EXPECT_EQ(a.model.arch, "llama");
    EXPECT_EQ(a.model.n_layers, 3);
    EXPECT_EQ(a.model.kv_width, 4);
    EXPECT_EQ(a.model.meta_hash, 0x0123456789ABCDEFull);
    EXPECT_EQ(a.quant.key_codec, "higgs:2x16:g4");
    EXPECT_TRUE(a.layers[0].key.empty() && a.layers[0].value.empty());
    ASSERT_EQ(a.layers[1].key.w.size(), 16u);
    EXPECT_EQ(a.layers[1].key.w[0], -3 / 8.0f);  // (0 % 7 - 3) / 8
    EXPECT_TRUE(a.layers[2].key.empty());
    EXPECT_EQ(a.layers[2].value.in, 8);
  }
  // Version 3 (bit plan and channel scales), written from docs/ADAPTERS.md by the same script.
  const Adapters a = load_adapters(dir + "v3_plan_spec.aqkv");
  EXPECT_EQ(a.key_codec_of(1), "higgs:2x64:g4");
  EXPECT_EQ(a.value_codec_of(1), "higgs:4x16:g4");
  EXPECT_EQ(a.key_codec_of(2), "higgs:2x16:g4");
  EXPECT_EQ(a.layers[1].key_scale, (std::vector<float>{0.5f, 0.75f, 1.0f, 1.25f}));
  EXPECT_TRUE(a.layers[1].value_scale.empty());
  EXPECT_EQ(a.layers[2].value_scale, std::vector<float>(4, 2.0f));
  EXPECT_EQ(a.layers[1].key.w[0], -3 / 8.0f);
  EXPECT_EQ(a.layers[2].value.in, 8);
  EXPECT_TRUE(a.layers[2].key.empty());
  // Re-written by the C++ writer: the same bytes.
  TmpDir t;
  save_adapters(a, t.file("re.aqkv"));
  EXPECT_EQ(slurp(t.file("re.aqkv")), slurp(dir + "v3_plan_spec.aqkv"));
}

// The version bump: a version-1 file must carry the old checksum, a version-2 file the new one.
TEST(Adapters, VersionSelectsTheChecksumBasis) {
  TmpDir t;
  const std::string p = t.file("a.bin");
  save_adapters(sample(), p);
  const std::vector<char> v2 = slurp(p);
  std::vector<char> b = v2;
  b[8] = 1;  // version 1 with a version-2 checksum: refused
  put_checksum(b, spec_fnv1a64(b.data(), b.size() - 8));
  spit(p, b);
  expect_refused([&] { load_adapters(p); }, "checksum mismatch");
  put_checksum(b, spec_fnv1a64(b.data(), b.size() - 8, 1469598103934665603ull));
  spit(p, b);
  const Adapters a = load_adapters(p);  // version 1 with its own checksum: read
  EXPECT_EQ(a.layers[1].key.w, sample().layers[1].key.w);
  b = v2;  // version 2 with the old checksum: refused
  put_checksum(b, spec_fnv1a64(b.data(), b.size() - 8, 1469598103934665603ull));
  spit(p, b);
  expect_refused([&] { load_adapters(p); }, "checksum mismatch");
}

// Finding 10: a codec spec from the file that aquakv does not know names the file.
TEST(Adapters, BogusCodecInTheFileNamesTheFile) {
  TmpDir t;
  const std::string p = t.file("bogus.aqkv");
  Adapters a = sample();
  a.quant.key_codec = "bogus";
  save_adapters(a, p);
  KvShape s;
  s.n_layers = 4;
  s.n_kv_heads = 2;
  s.head_dim = 8;
  s.max_tokens = 64;
  expect_refused([&] { make_cache("aquakv:" + p, s); }, "adapters " + p + ": ");
}

// Bit plan (format version 3): per-layer codecs round trip; a file without a plan is still
// written as version 2; a version-2 file may not carry per-layer codecs (flag bit 2).
TEST(Adapters, PlanRoundTripsAsVersion3) {
  TmpDir t;
  const std::string p = t.file("plan.aqkv");
  Adapters a = sample();
  a.layers[1].key_codec = "higgs:2x64:g16";
  a.layers[1].value_codec = "higgs:4x16:g16";
  a.layers[3].value_codec = "higgs:2x256:g16";  // key: the file's
  save_adapters(a, p);
  std::vector<char> b = slurp(p);
  uint32_t version;
  std::memcpy(&version, b.data() + 8, 4);
  EXPECT_EQ(version, 3u);
  uint64_t stored;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  EXPECT_EQ(stored, spec_fnv1a64(b.data(), b.size() - 8));
  const Adapters r = load_adapters(p);
  EXPECT_TRUE(r.has_plan());
  EXPECT_EQ(r.key_codec_of(1), "higgs:2x64:g16");
  EXPECT_EQ(r.value_codec_of(1), "higgs:4x16:g16");
  EXPECT_EQ(r.key_codec_of(2), a.quant.key_codec);
  EXPECT_EQ(r.key_codec_of(3), a.quant.key_codec);  // written out in full
  EXPECT_EQ(r.value_codec_of(3), "higgs:2x256:g16");
  EXPECT_EQ(r.key_codec_of(0), "f16");
  expect_same_map(a.layers[1].key, r.layers[1].key);
  expect_same_map(a.layers[3].value, r.layers[3].value);
  b[8] = 2;  // the same bytes claiming version 2: the flag is refused
  put_checksum(b, spec_fnv1a64(b.data(), b.size() - 8));
  spit(p, b);
  expect_refused([&] { load_adapters(p); }, "layer 1 flags");
  a.layers[0].key_codec = "higgs2";
  expect_refused([&] { save_adapters(a, p); }, "layer 0");
}

// Channel scales (version 3, flag bits 3 and 4) round trip exactly and wrap the layer's codec.
TEST(Adapters, ChannelScalesRoundTrip) {
  TmpDir t;
  const std::string p = t.file("scales.aqkv");
  Adapters a = sample();
  a.quant = {"higgs:2x16:g16", "higgs:2x16:g16", "fp16", 16, 0};
  for (int c = 0; c < 16; ++c) a.layers[2].key_scale.push_back(0.5f + 0.1f * float(c));
  a.layers[3].value_scale.assign(16, 2.0f);
  save_adapters(a, p);
  const Adapters r = load_adapters(p);
  EXPECT_FALSE(r.has_plan());
  EXPECT_TRUE(r.has_scales());
  EXPECT_EQ(r.layers[2].key_scale, a.layers[2].key_scale);
  EXPECT_TRUE(r.layers[2].value_scale.empty());
  EXPECT_EQ(r.layers[3].value_scale, a.layers[3].value_scale);
  KvShape s;
  s.n_layers = 4;
  s.n_kv_heads = 2;
  s.head_dim = 8;
  s.max_tokens = 64;
  EXPECT_NE(make_cache("aquakv:" + p, s), nullptr);
  a.layers[3].value_scale.assign(15, 2.0f);
  expect_refused([&] { save_adapters(a, p); }, "15 channel scales");
  a.layers[3].value_scale.assign(16, 2.0f);
  a.layers[3].value_scale[4] = 0.0f;
  save_adapters(a, p);
  expect_refused([&] { make_cache("aquakv:" + p, s); }, "not a finite positive number");
}

// A planned codec with another group size than the file's is refused when the cache is built.
TEST(Adapters, PlanCodecMustShareTheGroupSize) {
  TmpDir t;
  const std::string p = t.file("plan.aqkv");
  Adapters a = sample();
  a.quant = {"higgs:2x16:g16", "higgs:2x16:g16", "fp16", 16, 0};
  a.layers[2].key_codec = "higgs:2x64:g8";
  a.layers[2].value_codec = "higgs:2x16:g16";
  save_adapters(a, p);
  KvShape s;
  s.n_layers = 4;
  s.n_kv_heads = 2;
  s.head_dim = 8;
  s.max_tokens = 64;
  expect_refused([&] { make_cache("aquakv:" + p, s); }, "layer 2 codecs");
  a.layers[2].key_codec = "higgs:2x64:g16";
  save_adapters(a, p);
  const auto cache = make_cache("aquakv:" + p, s);  // accepted
  EXPECT_NE(cache, nullptr);
}

TEST(Adapters, DirectoryIsNamed) {
  TmpDir t;
  expect_refused([&] { load_adapters(t.dir.string()); }, "adapters " + t.dir.string() + ": is a directory");
}

}  // namespace
}  // namespace aquakv
