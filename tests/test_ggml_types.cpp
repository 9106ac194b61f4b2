// Tests of ops/ggml_types.h and ops/ggml_quantize.h against the `gguf` Python package:
// dequantization of every supported type and Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 quantization are
// bit-exact with goldens made by scripts/make_ggml_goldens.py (the reference does the same
// float32 operations in the same order, so no ulp tolerance is needed); the AVX2 decoders equal
// the scalar ones bit for bit; rows of the real model's tensors match gguf-py's dequantization
// (goldens by scripts/make_gguf_goldens.py).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "aquakv/engine/gguf.h"
#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

struct Golden {
  uint32_t type_id = 0;
  std::string name;
  int64_t n = 0;
  std::vector<float> input;  // empty for types without a reference quantizer
  std::vector<uint8_t> blocks;
  std::vector<float> deq;
};

class Reader {
 public:
  explicit Reader(const std::string& path) : in_(path, std::ios::binary) {
    if (!in_) throw std::runtime_error("cannot open " + path);
  }
  template <typename T>
  T get() {
    T v{};
    in_.read(reinterpret_cast<char*>(&v), sizeof(T));
    if (!in_) throw std::runtime_error("golden file truncated");
    return v;
  }
  void bytes(void* dst, size_t n) {
    in_.read(static_cast<char*>(dst), std::streamsize(n));
    if (!in_) throw std::runtime_error("golden file truncated");
  }

 private:
  std::ifstream in_;
};

// Format: see scripts/make_ggml_goldens.py.
std::vector<Golden> load_goldens() {
  Reader r(std::string(AQUAKV_TEST_DATA) + "/ggml_goldens.bin");
  char magic[8];
  r.bytes(magic, 8);
  if (std::memcmp(magic, "AQKVGLD1", 8) != 0) throw std::runtime_error("bad golden magic");
  const uint32_t count = r.get<uint32_t>();
  std::vector<Golden> out(count);
  for (auto& g : out) {
    g.type_id = r.get<uint32_t>();
    g.name.resize(r.get<uint32_t>());
    r.bytes(g.name.data(), g.name.size());
    g.n = int64_t(r.get<uint64_t>());
    g.input.resize(r.get<uint64_t>());
    r.bytes(g.input.data(), g.input.size() * 4);
    g.blocks.resize(r.get<uint64_t>());
    r.bytes(g.blocks.data(), g.blocks.size());
    g.deq.resize(size_t(g.n));
    r.bytes(g.deq.data(), g.deq.size() * 4);
  }
  return out;
}

const std::vector<Golden>& goldens() {
  static const std::vector<Golden> g = load_goldens();
  return g;
}

// Index of the first element whose bits differ, or -1.
int64_t first_bit_diff(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (fp32_to_bits(a[i]) != fp32_to_bits(b[i])) return i;
  }
  return -1;
}

TEST(GgmlTypes, GoldensCoverEverySupportedType) {
  std::vector<std::string> names;
  for (const auto& g : goldens()) names.push_back(g.name);
  for (const char* t : {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K",
                        "Q3_K", "Q4_K", "Q5_K", "Q6_K"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), t), names.end()) << t;
  }
}

TEST(GgmlTypes, TableMatchesGoldenGeometry) {
  for (const auto& g : goldens()) {
    const auto info = ggml_type_info(g.type_id);
    ASSERT_TRUE(info.has_value()) << g.name;
    EXPECT_EQ(info->name, g.name);
    EXPECT_TRUE(info->supported) << g.name;
    EXPECT_EQ(ggml_row_bytes(GgmlType(g.type_id), g.n), int64_t(g.blocks.size())) << g.name;
    EXPECT_EQ(ggml_type_name(GgmlType(g.type_id)), g.name);
  }
  EXPECT_FALSE(ggml_type_info(99).has_value());
  EXPECT_FALSE(ggml_type_info(16)->supported);  // IQ2_XXS: known by name, not decodable
  EXPECT_EQ(ggml_type_info(16)->name, "IQ2_XXS");
}

TEST(GgmlTypes, ScalarDequantizationIsBitExactWithGgufPy) {
  for (const auto& g : goldens()) {
    std::vector<float> out(size_t(g.n), -7.0f);
    dequantize_row_ref(GgmlType(g.type_id), g.blocks.data(), out.data(), g.n);
    const int64_t i = first_bit_diff(out.data(), g.deq.data(), g.n);
    EXPECT_EQ(i, -1) << g.name << " value " << i << ": got " << (i >= 0 ? out[i] : 0)
                     << ", gguf-py " << (i >= 0 ? g.deq[i] : 0);
  }
}

TEST(GgmlTypes, DispatchedDequantizationIsBitExactWithGgufPy) {
  for (SimdLevel level : {SimdLevel::kScalar, SimdLevel::kAvx2}) {
    set_simd_level(level);
    for (const auto& g : goldens()) {
      std::vector<float> out(size_t(g.n), -7.0f);
      dequantize_row(GgmlType(g.type_id), g.blocks.data(), out.data(), g.n);
      const int64_t i = first_bit_diff(out.data(), g.deq.data(), g.n);
      EXPECT_EQ(i, -1) << g.name << " at " << simd_level_name(simd_level()) << " value " << i;
    }
  }
  set_simd_level(cpu_simd_level());
}

TEST(GgmlQuantize, BitExactWithGgufPy) {
  int checked = 0;
  for (const auto& g : goldens()) {
    if (g.input.empty()) continue;
    std::vector<uint8_t> out(g.blocks.size(), 0xAB);
    ASSERT_TRUE(quantize_row_ref(GgmlType(g.type_id), g.input.data(), out.data(), g.n)) << g.name;
    const int64_t bb = ggml_type_info(g.type_id)->block_bytes;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] != g.blocks[i]) {
        ADD_FAILURE() << g.name << " block " << i / bb << " byte " << i % bb << ": got "
                      << int(out[i]) << ", gguf-py " << int(g.blocks[i]);
        break;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5);
  EXPECT_FALSE(quantize_row_ref(GgmlType::Q4_K, nullptr, nullptr, 0));
}

// From the definition of Q8_0: |x - d16*q| <= d/2 + 127*|d - d16| with d = max|x|/127 and d16
// its fp16 rounding: |d - d16| <= max(d * 2^-11, 2^-25) (relative half-ulp for normal halves,
// absolute half-ulp 2^-25 in the subnormal range), plus float rounding of x*id (< 1e-6 * d).
TEST(GgmlQuantize, Q8_0ErrorWithinDerivedBound) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    float x[32];
    const float scale = std::pow(10.0f, float(trial % 7) - 3.0f);
    for (float& v : x) v = nd(rng) * scale;
    uint8_t q[34];
    quantize_row_q8_0_ref(x, q, 32);
    float y[32];
    dequantize_row_ref(GgmlType::Q8_0, q, y, 32);
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    const double d = amax / 127.0;
    const double bound = d * (0.5 + 1e-6) + 127.0 * std::max(d / 2048.0, std::ldexp(1.0, -25));
    for (int i = 0; i < 32; ++i) {
      ASSERT_LE(std::fabs(double(x[i]) - y[i]), bound) << i << " scale " << scale;
    }
  }
}

// Q8_K has no gguf-py decoder; its definition is x_i = d * q_i with a float32 d.
TEST(GgmlTypes, Q8_KFromDefinition) {
  std::vector<uint8_t> block(292, 0);
  const float d = 0.375f;
  std::memcpy(block.data(), &d, 4);
  for (int i = 0; i < 256; ++i) block[4 + i] = uint8_t(int8_t(i - 128));
  std::vector<float> out(256);
  dequantize_row_ref(GgmlType::Q8_K, block.data(), out.data(), 256);
  for (int i = 0; i < 256; ++i) ASSERT_EQ(out[i], 0.375f * float(i - 128)) << i;
}

// AVX2 decoders against the scalar reference on random bytes (finite fp16 scales), block
// counts 0..40, and source pointers at every misalignment 0..3.
TEST(GgmlTypes, SimdEqualsScalarOnRandomBlocks) {
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(11);
  for (GgmlType t : {GgmlType::F16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                     GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const auto info = *ggml_type_info(uint32_t(t));
    for (int64_t blocks = 0; blocks <= 40; ++blocks) {
      const int64_t n = blocks * (t == GgmlType::F16 ? 1 : info.block_values);
      for (int mis = 0; mis < 4; ++mis) {
        std::vector<uint8_t> buf(size_t(blocks * info.block_bytes + mis));
        for (auto& b : buf) b = uint8_t(rng());
        uint8_t* src = buf.data() + mis;
        // Keep every fp16 field finite: clear the top exponent bit of each half that is a
        // scale (block starts), or of every value for F16.
        const int64_t stride = t == GgmlType::F16 ? 2 : info.block_bytes;
        for (int64_t b = 0; b < (t == GgmlType::F16 ? n : blocks); ++b) {
          if (t == GgmlType::Q6_K) {  // d is the last field
            src[b * stride + 209] &= 0xbf;
            continue;
          }
          src[b * stride + 1] &= 0xbf;
          if (t == GgmlType::Q4_1 || t == GgmlType::Q5_1 || t == GgmlType::Q4_K) src[b * stride + 3] &= 0xbf;
        }
        std::vector<float> ref(static_cast<size_t>(n)), fast(static_cast<size_t>(n));
        dequantize_row_ref(t, src, ref.data(), n);
        for (int lv = 1; lv <= int(cpu_simd_level()); ++lv) {  // AVX2, then AVX-512 where present
          set_simd_level(SimdLevel(lv));
          dequantize_row(t, src, fast.data(), n);
          set_simd_level(cpu_simd_level());
          const int64_t i = first_bit_diff(ref.data(), fast.data(), n);
          ASSERT_EQ(i, -1) << ggml_type_name(t) << " level " << lv << " n=" << n << " mis=" << mis << " at " << i;
        }
      }
    }
  }
}

// FNV-1a 64 as in scripts/make_gguf_goldens.py.
uint64_t fnv1a64(const void* data, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Rows of the default model's tensors against gguf-py's dequantization of the same file.
TEST(GgmlTypes, ModelRowsMatchGgufPy) {
  const char* model = std::getenv("AQUAKV_MODEL");
  if (model == nullptr || *model == '\0') GTEST_SKIP() << "AQUAKV_MODEL not set";
  std::ifstream in(std::string(AQUAKV_TEST_DATA) + "/smollm2_tensor_rows.json");
  const auto golden = nlohmann::json::parse(in);
  const auto f = GgufFile::open(model);
  if (f->file_size() != golden["file_size"].get<uint64_t>()) {
    GTEST_SKIP() << "AQUAKV_MODEL is not the model the goldens were made from";
  }
  size_t rows_checked = 0, rows_in_golden = 0;
  for (const auto& gt : golden["tensors"]) rows_in_golden += gt["rows"].size();
  for (const auto& gt : golden["tensors"]) {
    const GgufTensorInfo& t = f->tensor(gt["name"].get<std::string>());
    ASSERT_EQ(uint32_t(t.type), gt["type"].get<uint32_t>());
    const int64_t row_bytes = ggml_row_bytes(t.type, t.shape[0]);
    for (const auto& gr : gt["rows"]) {
      const int64_t row = gr["row"].get<int64_t>();
      ASSERT_EQ(t.shape[0], gr["n"].get<int64_t>());
      std::vector<float> out(size_t(t.shape[0]));
      dequantize_row(t.type, t.data + row * row_bytes, out.data(), t.shape[0]);
      const auto& head = gr["head"];
      EXPECT_EQ(hex64(fnv1a64(out.data(), out.size() * 4)), gr["fnv"].get<std::string>())
          << t.name << " row " << row << ": first value " << out[0] << ", gguf-py "
          << head[0].get<double>();
      for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(double(out[i]), head[i].get<double>());
      ++rows_checked;
    }
  }
  EXPECT_EQ(rows_checked, rows_in_golden);
  EXPECT_GE(rows_in_golden, 10u);
}

}  // namespace
}  // namespace aquakv
