// Tests of engine/gguf.h. Parsing is checked against gguf-py: fixtures written by its
// GGUFWriter and the default model, each with a summary made by its GGUFReader
// (scripts/make_gguf_goldens.py). Bad input is checked with files built here byte by byte:
// every prefix of a valid file, corrupted bytes, absurd counts and sizes must throw
// aquakv::Error with a message naming the field, never crash.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aquakv/engine/gguf.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

using json = nlohmann::json;

std::string data_path(const std::string& rel) { return std::string(AQUAKV_TEST_DATA) + "/" + rel; }

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// ---- Summary comparison (format: scripts/make_gguf_goldens.py) ----

// Leaves are copies: a long array's elements are decoded on each read (engine/gguf.h).
void flatten(const GgufValue& v, std::vector<GgufValue>& leaves) {
  if (v.type != GgufValueType::ARRAY) {
    leaves.push_back(v);
    return;
  }
  std::get<GgufValue::Array>(v.v).for_each([&](const GgufValue& item) { flatten(item, leaves); });
}

// Type chain as gguf-py reports it: outer type, then (for arrays) the chain of the first item,
// or just the element type when the array is empty.
std::vector<uint32_t> type_chain(const GgufValue& v) {
  std::vector<uint32_t> out{uint32_t(v.type)};
  if (v.type != GgufValueType::ARRAY) return out;
  const auto& a = std::get<GgufValue::Array>(v.v);
  if (a.size() == 0 || a.raw != nullptr) {  // a long array's elements are scalars or strings
    out.push_back(uint32_t(a.elem_type));
    return out;
  }
  const auto rest = type_chain(a.items[0]);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

void fnv(uint64_t& h, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 0x100000001b3ull;
  }
}

std::string leaf_hash(const std::vector<GgufValue>& leaves) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const GgufValue& leaf : leaves) {
    const GgufValue* v = &leaf;
    if (const auto* s = std::get_if<std::string>(&v->v)) {
      const uint64_t n = s->size();
      fnv(h, &n, 8);
      fnv(h, s->data(), s->size());
    } else if (const auto* b = std::get_if<bool>(&v->v)) {
      const uint8_t x = *b ? 1 : 0;
      fnv(h, &x, 1);
    } else if (const auto* u = std::get_if<uint64_t>(&v->v)) {
      fnv(h, u, 8);
    } else if (const auto* i = std::get_if<int64_t>(&v->v)) {
      fnv(h, i, 8);
    } else {
      const double d = std::get<double>(v->v);
      fnv(h, &d, 8);
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void expect_leaf_eq(const GgufValue& v, const json& j, const std::string& where) {
  if (const auto* s = std::get_if<std::string>(&v.v)) {
    EXPECT_EQ(*s, j.get<std::string>()) << where;
  } else if (const auto* b = std::get_if<bool>(&v.v)) {
    EXPECT_EQ(*b, j.get<bool>()) << where;
  } else if (const auto* u = std::get_if<uint64_t>(&v.v)) {
    EXPECT_EQ(*u, j.get<uint64_t>()) << where;
  } else if (const auto* i = std::get_if<int64_t>(&v.v)) {
    EXPECT_EQ(*i, j.get<int64_t>()) << where;
  } else {
    EXPECT_EQ(std::get<double>(v.v), j.get<double>()) << where;
  }
}

void expect_matches_summary(const GgufFile& f, const json& s) {
  EXPECT_EQ(f.version(), s["version"].get<uint32_t>());
  EXPECT_EQ(f.alignment(), s["alignment"].get<uint64_t>());
  EXPECT_EQ(f.data_offset(), s["data_offset"].get<uint64_t>());
  EXPECT_EQ(f.file_size(), s["file_size"].get<uint64_t>());
  const auto& md = s["metadata"];
  ASSERT_EQ(f.metadata().size(), md.size());
  for (size_t k = 0; k < md.size(); ++k) {
    const auto& [key, value] = f.metadata()[k];
    const json& m = md[k];
    ASSERT_EQ(key, m["key"].get<std::string>()) << "metadata index " << k;
    EXPECT_EQ(f.find(key), &value) << key;
    EXPECT_EQ(type_chain(value), m["types"].get<std::vector<uint32_t>>()) << key;
    if (value.type == GgufValueType::ARRAY) {
      EXPECT_EQ(std::get<GgufValue::Array>(value.v).size(), m["n"].get<size_t>()) << key;
    }
    std::vector<GgufValue> leaves;
    flatten(value, leaves);
    ASSERT_EQ(leaves.size(), m["n_leaves"].get<size_t>()) << key;
    EXPECT_EQ(leaf_hash(leaves), m["fnv"].get<std::string>()) << key;
    const json& shown = m.contains("values") ? m["values"] : m["head"];
    for (size_t i = 0; i < shown.size(); ++i) {
      expect_leaf_eq(leaves[i], shown[i], key + "[" + std::to_string(i) + "]");
    }
  }
  const auto& ts = s["tensors"];
  ASSERT_EQ(f.tensors().size(), ts.size());
  for (size_t k = 0; k < ts.size(); ++k) {
    const GgufTensorInfo& t = f.tensors()[k];
    const json& g = ts[k];
    ASSERT_EQ(t.name, g["name"].get<std::string>());
    EXPECT_EQ(f.find_tensor(t.name), &t);
    EXPECT_EQ(uint32_t(t.type), g["type"].get<uint32_t>()) << t.name;
    EXPECT_EQ(t.shape, g["shape"].get<std::vector<int64_t>>()) << t.name;
    EXPECT_EQ(t.offset, g["offset"].get<uint64_t>()) << t.name;
    EXPECT_EQ(t.n_bytes, g["n_bytes"].get<int64_t>()) << t.name;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    EXPECT_EQ(t.n_values, n) << t.name;
  }
}

const char* kFixtures[] = {"all_types_v3", "align64_v2", "align1_v3"};

TEST(Gguf, FixturesMatchGgufPyReader) {
  for (const char* name : kFixtures) {
    SCOPED_TRACE(name);
    const std::string path = data_path(std::string("gguf/") + name + ".gguf");
    const auto f = GgufFile::open(path);
    expect_matches_summary(*f, read_json(data_path(std::string("gguf/") + name + ".summary.json")));
    // The in-memory parser sees the same file.
    const auto bytes = read_bytes(path);
    const auto m = GgufFile::from_memory(bytes, name);
    EXPECT_EQ(m->metadata().size(), f->metadata().size());
    ASSERT_EQ(m->tensors().size(), f->tensors().size());
    for (size_t i = 0; i < m->tensors().size(); ++i) {
      const auto& a = f->tensors()[i];
      const auto& b = m->tensors()[i];
      EXPECT_EQ(std::memcmp(a.data, b.data, size_t(a.n_bytes)), 0) << a.name;
      EXPECT_EQ(b.data - m->tensors()[0].data, a.data - f->tensors()[0].data) << a.name;
    }
  }
}

TEST(Gguf, ModelMetadataMatchesGgufPyReader) {
  const char* model = std::getenv("AQUAKV_MODEL");
  if (model == nullptr || *model == '\0') GTEST_SKIP() << "AQUAKV_MODEL not set";
  const json s = read_json(data_path("smollm2_gguf_summary.json"));
  const auto f = GgufFile::open(model);
  if (f->file_size() != s["file_size"].get<uint64_t>()) GTEST_SKIP() << "not the default model";
  expect_matches_summary(*f, s);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u64("llama.block_count"), 30u);
  EXPECT_EQ(f->get_u64("llama.embedding_length"), 576u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(f->tensor("token_embd.weight").type, GgmlType::Q8_0);
  EXPECT_EQ(f->tensor("blk.0.attn_q.weight").type, GgmlType::Q4_1);
}

TEST(Gguf, TypedGetters) {
  const auto f = GgufFile::open(data_path("gguf/all_types_v3.gguf"));
  EXPECT_EQ(f->get_u64("test.u32"), 4000000000u);
  EXPECT_EQ(f->get_u64("test.u64"), UINT64_MAX);
  EXPECT_EQ(f->get_u64("test.u8"), 200u);
  EXPECT_EQ(f->get_u64_or("absent", 7), 7u);
  EXPECT_THROW(f->get_u64("test.i8"), Error);  // negative
  EXPECT_THROW(f->get_u64("test.string"), Error);
  EXPECT_THROW(f->get_u64("absent"), Error);
  EXPECT_EQ(f->get_f64_or("test.f32", 0), double(0.1f));
  EXPECT_EQ(f->get_f64_or("test.i32", 0), -2000000000.0);
  EXPECT_EQ(f->get_f64_or("absent", 2.5), 2.5);
  EXPECT_THROW(f->get_f64_or("test.bool_true", 0), Error);
  EXPECT_TRUE(f->get_bool_or("test.bool_true", false));
  EXPECT_FALSE(f->get_bool_or("test.bool_false", true));
  EXPECT_TRUE(f->get_bool_or("absent", true));
  EXPECT_THROW(f->get_bool_or("test.u8", false), Error);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_string("test.empty_string"), "");
  EXPECT_EQ(f->get_string_opt("absent"), std::nullopt);
  EXPECT_THROW(f->get_string("test.u8"), Error);
  EXPECT_EQ(f->get_string_array("test.arr_str"), (std::vector<std::string>{"a", "", "\xc3\xbc\xc3\x9f"}));
  EXPECT_THROW(f->get_string_array("test.arr_u8"), Error);
  EXPECT_EQ(f->get_i64_array("test.arr_i16"), (std::vector<int64_t>{-1, 2, -32768}));
  EXPECT_THROW(f->get_i64_array("test.arr_u64"), Error);  // 2^63 does not fit
  EXPECT_EQ(f->get_f64_array("test.arr_f32"), (std::vector<double>{0.5, -2.25, double(1e30f)}));
  EXPECT_THROW(f->get_f64_array("test.nested_int"), Error);
  EXPECT_THROW(f->tensor("absent"), Error);
  try {
    f->get_string("test.u32");
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("all_types_v3.gguf"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test.u32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expected STRING, got U32"), std::string::npos) << msg;
  }
}

// ---- A minimal writer for hand-made (and broken) files ----

class Builder {
 public:
  Builder& u8(uint8_t v) { return raw(&v, 1); }
  Builder& u32(uint32_t v) { return raw(&v, 4); }
  Builder& u64(uint64_t v) { return raw(&v, 8); }
  Builder& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Builder& raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Builder& kv_u32(const std::string& key, uint32_t v) {
    str(key);
    u32(4);
    return u32(v);
  }
  Builder& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                  uint64_t offset) {
    str(name);
    u32(uint32_t(dims.size()));
    for (uint64_t d : dims) u64(d);
    u32(type);
    return u64(offset);
  }
  Builder& pad(uint64_t align) {
    while (bytes.size() % align != 0) bytes.push_back(0);
    return *this;
  }
  Builder& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

// Parses and returns the error message; fails the test if parsing succeeds.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::from_memory(bytes, "bad.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

#define EXPECT_ERROR_HAS(bytes, ...)                                              \
  do {                                                                             \
    const std::string msg_ = parse_error(bytes);                                   \
    for (const char* part_ : {__VA_ARGS__}) {                                      \
      EXPECT_NE(msg_.find(part_), std::string::npos) << "'" << part_ << "' not in: " << msg_; \
    }                                                                              \
  } while (0)

// A valid file: one kv, two F32 tensors of 8 values, default alignment.
std::vector<uint8_t> small_valid() {
  Builder b;
  b.header(2, 1).kv_u32("general.x", 1);
  b.tensor("a", {8}, 0, 0).tensor("b", {4, 2}, 0, 32);
  b.pad(32).zeros(64);
  return b.bytes;
}

TEST(GgufBad, HandBuiltFileParses) {
  const auto bytes = small_valid();
  const auto f = GgufFile::from_memory(bytes, "ok.gguf");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensor("b").n_bytes, 32);
  EXPECT_EQ(f->tensor("b").data, f->tensor("a").data + 32);
}

TEST(GgufBad, MissingEmptyAndDirectory) {
  EXPECT_THROW(GgufFile::open("/nonexistent/model.gguf"), Error);
  EXPECT_THROW(GgufFile::open(AQUAKV_TEST_DATA), Error);
  const std::string empty = testing::TempDir() + "/aquakv_empty.gguf";
  { std::ofstream(empty, std::ios::binary); }
  try {
    GgufFile::open(empty);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(empty), std::string::npos) << e.what();
  }
  std::remove(empty.c_str());
  EXPECT_ERROR_HAS(std::vector<uint8_t>{}, "bad.gguf", "header.magic");
}

// Every strict prefix that cuts into the header, metadata, tensor infos or tensor data must
// throw; prefixes that only drop trailing padding after the last tensor may parse.
TEST(GgufBad, EveryPrefixThrowsOrIsComplete) {
  for (const char* name : kFixtures) {
    const auto bytes = read_bytes(data_path(std::string("gguf/") + name + ".gguf"));
    const auto full = GgufFile::from_memory(bytes, name);
    uint64_t end = full->data_offset();
    for (const auto& t : full->tensors()) end = std::max(end, full->data_offset() + t.offset + t.n_bytes);
    for (size_t len = 0; len < bytes.size(); ++len) {
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + len);
      if (len < end) {
        EXPECT_THROW(GgufFile::from_memory(prefix, name), Error) << name << " prefix " << len;
      } else {
        EXPECT_NO_THROW(GgufFile::from_memory(prefix, name)) << name << " prefix " << len;
      }
    }
  }
}

// Every byte replaced by a few values: the parser either accepts the file or throws Error.
TEST(GgufBad, CorruptedBytesNeverCrash) {
  const auto bytes = read_bytes(data_path("gguf/all_types_v3.gguf"));
  const auto full = GgufFile::from_memory(bytes, "x");
  int errors = 0;
  for (size_t i = 0; i < full->data_offset(); ++i) {
    for (uint8_t v : {uint8_t(0), uint8_t(0xff), uint8_t(bytes[i] + 1), uint8_t(0x80)}) {
      auto c = bytes;
      c[i] = v;
      try {
        GgufFile::from_memory(c, "corrupt.gguf");
      } catch (const Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, 1000);  // most corruptions of the header/metadata are detected
}

TEST(GgufBad, WrongMagicAndVersion) {
  auto b = small_valid();
  std::memcpy(b.data(), "GGML", 4);
  EXPECT_ERROR_HAS(b, "bad.gguf", "header.magic", "expected 'GGUF'", "got 'GGML'");
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    auto c = small_valid();
    std::memcpy(c.data() + 4, &v, 4);
    EXPECT_ERROR_HAS(c, "header.version", "expected 2 or 3", ("got " + std::to_string(v)).c_str());
  }
  auto v1 = small_valid();
  v1[4] = 1;
  EXPECT_ERROR_HAS(v1, "v1 is not supported");
  auto be = small_valid();
  const uint32_t swapped = 0x03000000u;
  std::memcpy(be.data() + 4, &swapped, 4);
  EXPECT_ERROR_HAS(be, "big-endian");
  auto v2 = small_valid();
  v2[4] = 2;
  EXPECT_EQ(GgufFile::from_memory(v2, "v2")->version(), 2u);
}

TEST(GgufBad, AbsurdCounts) {
  EXPECT_ERROR_HAS(Builder().header(0, uint64_t(1) << 60).zeros(100).bytes, "header.kv_count");
  EXPECT_ERROR_HAS(Builder().header(UINT64_MAX, 0).zeros(100).bytes, "header.tensor_count");
  // Key length far beyond the file.
  EXPECT_ERROR_HAS(Builder().header(0, 1).u64(UINT64_MAX).zeros(20).bytes, "metadata[0].key length",
                   "18446744073709551615");
  // String value length beyond the file.
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(8).u64(1000).zeros(20).bytes,
                   "metadata 'k' length", "got 1000");
  // Array count beyond the file (u32 elements: 4 bytes each).
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(9).u32(4).u64(uint64_t(1) << 62).zeros(40).bytes,
                   "metadata 'k' count", "U32 elements");
  // Array of strings: count checked against 8 bytes per element before anything is read.
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(9).u32(8).u64(10).zeros(40).bytes,
                   "metadata 'k' count");
  // Deeply nested arrays are refused, not recursed into.
  Builder deep;
  deep.header(0, 1).str("k").u32(9);
  for (int i = 0; i < 100; ++i) deep.u32(9).u64(1);
  deep.u32(4).u64(1).u32(0);
  EXPECT_ERROR_HAS(deep.bytes, "nested at most");
}

// Long arrays (kGgufLazyArrayItems and more) stay in the file image: their elements, decoded on
// each read, equal what was written, for every element type; their checks at open are those of
// short arrays (a bad BOOL, a string running past the end).
TEST(GgufBad, LongArraysDecodeFromTheFile) {
  const uint64_t n = kGgufLazyArrayItems + 3;
  Builder b;
  b.header(0, 4);
  b.str("u16").u32(9).u32(2).u64(n);
  auto put = [&b](auto v) { b.raw(&v, sizeof v); };
  for (uint64_t i = 0; i < n; ++i) put(uint16_t(i * 7));
  b.str("f32").u32(9).u32(6).u64(n);
  for (uint64_t i = 0; i < n; ++i) put(0.25f * float(i) - 3.0f);
  b.str("i64").u32(9).u32(11).u64(n);
  for (uint64_t i = 0; i < n; ++i) put(int64_t(i) * -1000003);
  b.str("str").u32(9).u32(8).u64(n);
  for (uint64_t i = 0; i < n; ++i) b.str(std::string(i % 40, char('a' + i % 26)));
  const auto f = GgufFile::from_memory(b.bytes, "long");
  const auto& u16 = std::get<GgufValue::Array>(f->find("u16")->v);
  EXPECT_NE(u16.raw, nullptr);
  EXPECT_TRUE(u16.items.empty());
  EXPECT_EQ(u16.size(), n);
  const auto ints = f->get_i64_array("u16");
  const auto f32 = f->get_f64_array("f32");
  const auto i64 = f->get_i64_array("i64");
  const auto strs = f->get_string_array("str");
  ASSERT_EQ(ints.size(), n);
  ASSERT_EQ(f32.size(), n);
  ASSERT_EQ(i64.size(), n);
  ASSERT_EQ(strs.size(), n);
  for (uint64_t i = 0; i < n; ++i) {
    EXPECT_EQ(ints[i], int64_t(uint16_t(i * 7))) << i;
    EXPECT_EQ(f32[i], double(0.25f * float(i) - 3.0f)) << i;
    EXPECT_EQ(i64[i], int64_t(i) * -1000003) << i;
    EXPECT_EQ(strs[i], std::string(i % 40, char('a' + i % 26))) << i;
  }
  // A BOOL that is neither 0 nor 1 deep in a long array, and a string past the end.
  Builder bad_bool;
  bad_bool.header(0, 1).str("k").u32(9).u32(7).u64(n);
  for (uint64_t i = 0; i < n; ++i) bad_bool.u8(i == n - 2 ? 5 : uint8_t(i & 1));
  const std::string at_bool = "metadata 'k'[" + std::to_string(n - 2) + "]";
  EXPECT_ERROR_HAS(bad_bool.bytes, at_bool.c_str(), "BOOL", "got 5");
  Builder bad_str;
  bad_str.header(0, 1).str("k").u32(9).u32(8).u64(n);
  for (uint64_t i = 0; i + 1 < n; ++i) bad_str.str("ab");
  bad_str.u64(1000).zeros(8);
  const std::string at_str = "metadata 'k'[" + std::to_string(n - 1) + "] length";
  EXPECT_ERROR_HAS(bad_str.bytes, at_str.c_str(), "got 1000");
}

TEST(GgufBad, BadValues) {
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(13).u32(0).bytes, "metadata 'k' type",
                   "got 13");
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(9).u32(77).u64(0).bytes,
                   "element type", "got 77");
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("k").u32(7).u8(2).zeros(4).bytes, "BOOL", "got 2");
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("").u32(4).u32(0).bytes, "key length");
  EXPECT_ERROR_HAS(Builder().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).bytes, "metadata 'k'",
                   "duplicate");
}

TEST(GgufBad, Alignment) {
  EXPECT_ERROR_HAS(Builder().header(0, 1).kv_u32("general.alignment", 0).bytes,
                   "general.alignment", "power of two", "got 0");
  EXPECT_ERROR_HAS(Builder().header(0, 1).kv_u32("general.alignment", 48).bytes, "got 48");
  EXPECT_ERROR_HAS(Builder().header(0, 1).str("general.alignment").u32(10).u64(32).bytes,
                   "general.alignment", "expected U32, got U64");
  // Alignment 64: offset 32 is misaligned.
  Builder b;
  b.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {8}, 0, 32).pad(64).zeros(128);
  EXPECT_ERROR_HAS(b.bytes, "tensor 't' offset", "multiple of the alignment 64", "got 32");
}

TEST(GgufBad, TensorInfos) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data = 64) {
    Builder b;
    b.header(1, 0).tensor("w", std::move(dims), type, offset).pad(32).zeros(data);
    return b.bytes;
  };
  EXPECT_ERROR_HAS(one({}, 0, 0), "tensor 'w' n_dims", "expected 1..4", "got 0");
  EXPECT_ERROR_HAS(one({1, 1, 1, 1, 1}, 0, 0), "n_dims", "got 5");
  EXPECT_ERROR_HAS(one({uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0), "dims[1]", "int64");
  EXPECT_ERROR_HAS(one({UINT64_MAX}, 0, 0), "dims[0]");
  EXPECT_ERROR_HAS(one({uint64_t(1) << 59, 8}, 0, 0), "byte size");  // values fit, bytes don't
  EXPECT_ERROR_HAS(one({uint64_t(1) << 62}, 0, 0), "byte size");     // a single row too big
  EXPECT_ERROR_HAS(one({uint64_t(1) << 62}, 1, 0), "byte size");     // F16 row of 2^63 bytes
  EXPECT_ERROR_HAS(one({32}, 99, 0), "tensor 'w' type", "known ggml type id", "got 99");
  EXPECT_ERROR_HAS(one({256}, 16, 0), "tensor 'w' type", "IQ2_XXS (id 16)");
  {  // ... unless asked to list such tensors (aquakv inspect); geometry still checked.
    const auto f = GgufFile::from_memory(one({256}, 16, 0, 128), "iq.gguf", {.allow_unsupported_types = true});
    EXPECT_EQ(ggml_type_name(f->tensor("w").type), "IQ2_XXS");
    EXPECT_EQ(f->tensor("w").n_bytes, 66);
    EXPECT_THROW(GgufFile::from_memory(one({256}, 99, 0), "x", {.allow_unsupported_types = true}), Error);
    EXPECT_THROW(GgufFile::from_memory(one({512}, 16, 0), "x", {.allow_unsupported_types = true}), Error);
  }
  EXPECT_ERROR_HAS(one({33}, 8, 0), "dims[0]", "multiple of the Q8_0 block size 32", "got 33");
  EXPECT_ERROR_HAS(one({8}, 0, 7), "offset", "multiple of the alignment 32", "got 7");
  EXPECT_ERROR_HAS(one({8}, 0, 64), "offset", "data section");   // starts past the end
  EXPECT_ERROR_HAS(one({32}, 0, 0), "offset", "data section");   // 128 bytes > 64
  EXPECT_ERROR_HAS(one({8}, 0, uint64_t(1) << 63), "offset");
  EXPECT_ERROR_HAS(one({8}, 0, UINT64_MAX - 31), "offset");
  EXPECT_ERROR_HAS(Builder().header(1, 0).tensor("", {8}, 0, 0).pad(32).zeros(32).bytes,
                   "tensor[0].name");
  Builder dup;
  dup.header(2, 0).tensor("w", {8}, 0, 0).tensor("w", {8}, 0, 32).pad(32).zeros(64);
  EXPECT_ERROR_HAS(dup.bytes, "tensor 'w'", "duplicate");
  Builder overlap;
  overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {8}, 0, 32).pad(32).zeros(96);
  EXPECT_ERROR_HAS(overlap.bytes, "tensor 'b' offset", "overlap");
  // Header says tensors exist but the file ends before the aligned data section.
  Builder cut;
  cut.header(1, 0).tensor("w", {0}, 0, 0);
  EXPECT_ERROR_HAS(cut.bytes, "data section");
}

// Every committed corpus input (tests/data/gguf_corpus/, fuzzer finds included) parses or
// throws Error.
TEST(GgufBad, CorpusReplay) {
  const std::string dir = data_path("gguf_corpus");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no corpus";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const auto bytes = read_bytes(e.path().string());
    try {
      GgufFile::from_memory(bytes, e.path().filename().string());
    } catch (const Error&) {
    }
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace aquakv
