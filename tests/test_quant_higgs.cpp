// Tests of the HIGGS codec: relative MSE on Gaussian rows equals the grid MSE, codes are a fixed
// point of encode(decode(.)), zero and extreme groups, parameter errors, golden rows from an
// independent float64 numpy implementation (scripts/make_quant_goldens.py), and decode /
// decode_add of arbitrary bytes against a plain reference of the format at every SIMD level.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>

#include "aquakv/quant/bitpack.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/hadamard.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

std::vector<float> gaussian_rows(int64_t rows, int64_t dim, uint64_t seed) {
  GaussRng rng(seed);
  std::vector<float> x(size_t(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    const double scale = 0.05 + 4.0 * rng.uniform();  // rows of different magnitudes
    for (int64_t i = 0; i < dim; ++i) x[size_t(r * dim + i)] = float(scale * rng.normal());
  }
  return x;
}

double rel_mse(const std::vector<float>& x, const std::vector<float>& y, int64_t dim) {
  // Mean over rows of ||x - y||^2 / ||x||^2.
  double total = 0;
  const int64_t rows = int64_t(x.size()) / dim;
  for (int64_t r = 0; r < rows; ++r) {
    double e = 0, n = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const double a = x[size_t(r * dim + i)], b = y[size_t(r * dim + i)];
      e += (a - b) * (a - b);
      n += a * a;
    }
    total += e / n;
  }
  return total / double(rows);
}

struct Case {
  int64_t dim, g;
  int d;
  int64_t n;
  uint64_t seed;
};

TEST(Higgs, RelativeMseEqualsGridMse) {
  const Case cases[] = {{192, 192, 2, 16, 0}, {192, 64, 2, 16, 7},  {192, 192, 2, 64, 0},
                        {192, 192, 2, 256, 0}, {256, 256, 4, 256, 0}, {320, 320, 2, 16, 1},
                        {576, 192, 1, 4, 0},   {192, 192, 8, 65536, 0}};
  for (const auto& c : cases) {
    const Grid& grid = builtin_grid(c.d, c.n);
    const HiggsCodec codec(c.dim, c.g, grid, c.seed);
    const int64_t rows = 400000 / c.dim;
    const auto x = gaussian_rows(rows, c.dim, 100 + c.g);
    std::vector<uint8_t> bytes(size_t(codec.encoded_bytes(rows)));
    std::vector<float> y(x.size());
    codec.encode(x.data(), rows, bytes.data());
    codec.decode(bytes.data(), rows, y.data());
    const double want = grid_mse(grid, int64_t(1) << 19, 3);
    EXPECT_NEAR(rel_mse(x, y, c.dim) / want, 1.0, 0.02) << codec.spec() << " grid mse " << want;
  }
}

TEST(Higgs, BitsPerValueAndLayout) {
  const HiggsCodec a(192, 192, builtin_grid(2, 16), 0);
  EXPECT_EQ(a.block_rows(), 1);
  EXPECT_EQ(a.block_bytes(), 2 + 96 * 4 / 8);
  EXPECT_DOUBLE_EQ(a.bits_per_value(), 2.0 + 16.0 / 192);
  EXPECT_EQ(a.spec(), "higgs:2x16:g192");
  const HiggsCodec b(192, 64, builtin_grid(2, 64), 5);
  EXPECT_DOUBLE_EQ(b.bits_per_value(), 3.0 + 16.0 / 64);
  EXPECT_EQ(b.spec(), "higgs:2x64:g64:seed5");
  const HiggsCodec c(64, 64, builtin_grid(4, 256), 0);
  EXPECT_DOUBLE_EQ(c.bits_per_value(), 2.0 + 16.0 / 64);
}

TEST(Higgs, CodesAreAFixedPointOfEncodeDecode) {
  for (const Case& c : {Case{192, 192, 2, 16, 0}, Case{192, 64, 2, 256, 9}, Case{128, 128, 4, 256, 0},
                        Case{192, 192, 1, 4, 0}}) {
    const HiggsCodec codec(c.dim, c.g, builtin_grid(c.d, c.n), c.seed);
    const int64_t rows = 500;
    const auto x = gaussian_rows(rows, c.dim, 5);
    std::vector<uint8_t> b1(size_t(codec.encoded_bytes(rows))), b2(b1.size());
    std::vector<float> y(x.size());
    codec.encode(x.data(), rows, b1.data());
    codec.decode(b1.data(), rows, y.data());
    codec.encode(y.data(), rows, b2.data());
    const int64_t scale_bytes = 2 * (c.dim / c.g);
    int64_t differing = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = scale_bytes; i < codec.block_bytes(); ++i) {
        differing += b1[size_t(r * codec.block_bytes() + i)] != b2[size_t(r * codec.block_bytes() + i)];
      }
    }
    EXPECT_EQ(differing, 0) << codec.spec();
  }
}

TEST(Higgs, ZeroTinyAndHugeGroups) {
  const HiggsCodec codec(128, 64, builtin_grid(2, 16), 0);
  std::vector<float> x(3 * 128, 0.0f);
  for (int i = 64; i < 128; ++i) x[size_t(i)] = float(i % 7) - 3.0f;  // row 0: zero group + data
  for (int i = 0; i < 128; ++i) x[size_t(128 + i)] = 1e-12f * float(i);  // row 1: below fp16
  for (int i = 0; i < 128; ++i) x[size_t(256 + i)] = (i % 2 ? -1 : 1) * 1e6f;  // row 2: huge
  std::vector<uint8_t> b(size_t(codec.encoded_bytes(3)));
  std::vector<float> y(x.size(), 123.0f);
  codec.encode(x.data(), 3, b.data());
  codec.decode(b.data(), 3, y.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(y[size_t(i)], 0.0f);
  for (int i = 0; i < 128; ++i) EXPECT_EQ(y[size_t(128 + i)], 0.0f);
  EXPECT_LT(rel_mse(std::vector<float>(x.begin() + 64, x.begin() + 128), std::vector<float>(y.begin() + 64, y.begin() + 128), 64), 0.3);
  for (int i = 0; i < 128; ++i) EXPECT_TRUE(std::isfinite(y[size_t(256 + i)]));
}

TEST(Higgs, RejectsBadParametersAtConstruction) {
  const Grid& g = builtin_grid(2, 16);
  EXPECT_THROW(HiggsCodec(192, 128, g, 0), Error);   // g does not divide C
  EXPECT_THROW(HiggsCodec(200, 100, g, 0), Error);   // not a Hadamard order
  EXPECT_THROW(HiggsCodec(192, 0, g, 0), Error);
  EXPECT_THROW(HiggsCodec(192, 12, builtin_grid(8, 256), 0), Error);  // d=8 does not divide 12
  Grid bad = g;
  bad.points[3] = NAN;
  EXPECT_THROW(HiggsCodec(192, 192, bad, 0), Error);
  EXPECT_EQ(higgs_default_group(192), 192);
  EXPECT_EQ(higgs_default_group(576), 192);
  EXPECT_EQ(higgs_default_group(4096), 1024);
  EXPECT_THROW(higgs_default_group(7), Error);
}

TEST(Higgs, SimdAndScalarGiveIdenticalBytes) {
  // Every SIMD level the CPU has against the scalar loops: encode bytes, decode and the inner
  // basis decode identical (2x64 and 2x256 take the AVX-512 register-table decode; row 0 is
  // all zeros, so its groups have norm 0).
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2";
  const SimdLevel saved = simd_level();
  for (const Case& c : {Case{192, 192, 2, 256, 3}, Case{192, 192, 2, 16, 0}, Case{192, 64, 2, 16, 5},
                        Case{192, 192, 2, 64, 0}, Case{192, 64, 2, 64, 0}, Case{192, 64, 2, 256, 0},
                        Case{256, 128, 4, 256, 0}, Case{192, 192, 1, 4, 0}, Case{192, 192, 4, 16, 0},
                        Case{192, 192, 8, 65536, 0}, Case{192, 64, 8, 65536, 0}}) {
    const HiggsCodec codec(c.dim, c.g, builtin_grid(c.d, c.n), c.seed);
    auto x = gaussian_rows(200, c.dim, 8);
    std::fill_n(x.begin(), c.dim, 0.0f);
    std::vector<uint8_t> a(size_t(codec.encoded_bytes(200))), b(a.size());
    std::vector<float> ya(x.size()), yb(x.size()), ua(x.size()), ub(x.size());
    set_simd_level(SimdLevel::kScalar);
    codec.encode(x.data(), 200, a.data());
    codec.decode(a.data(), 200, ya.data());
    codec.decode_inner(a.data(), 200, ua.data());
    for (int lv = 1; lv <= int(cpu_simd_level()); ++lv) {
      set_simd_level(SimdLevel(lv));
      codec.encode(x.data(), 200, b.data());
      codec.decode(a.data(), 200, yb.data());
      codec.decode_inner(a.data(), 200, ub.data());
      EXPECT_EQ(a, b) << codec.spec() << " level " << lv;
      EXPECT_EQ(ya, yb) << codec.spec() << " level " << lv;
      EXPECT_EQ(ua, ub) << codec.spec() << " level " << lv;
    }
    set_simd_level(saved);
  }
}

// decode_add (the AQUA-KV decoder's "prediction + decoded residual") at every SIMD level equals
// y + decode(codes) computed with the scalar decode, bit for bit: the fused AVX-512 path (grids
// 2x16 / 2x64 / 2x256 / 4x16 / 8x65536 in groups of 192, no signs) and the fallbacks (signs,
// groups of 64). Row 0
// codes an all-zero row (its group norms are 0: no rotation), rows have different magnitudes.
TEST(Higgs, DecodeAddEqualsDecodeThenAddAtEveryLevel) {
  const SimdLevel saved = simd_level();
  for (const Case& c : {Case{192, 192, 2, 16, 0}, Case{192, 192, 2, 64, 0}, Case{192, 192, 2, 256, 0},
                        Case{384, 192, 2, 16, 0}, Case{192, 192, 2, 16, 9}, Case{192, 64, 2, 16, 0},
                        Case{192, 192, 4, 16, 0}, Case{192, 192, 8, 65536, 0}, Case{384, 192, 8, 65536, 0},
                        Case{192, 192, 8, 65536, 3}, Case{192, 64, 8, 65536, 0}}) {
    const HiggsCodec codec(c.dim, c.g, builtin_grid(c.d, c.n), c.seed);
    const int64_t rows = 37;
    auto x = gaussian_rows(rows, c.dim, 11);
    std::fill_n(x.begin(), c.dim, 0.0f);
    std::vector<uint8_t> codes(size_t(codec.encoded_bytes(rows)));
    codec.encode(x.data(), rows, codes.data());
    const auto y0 = gaussian_rows(rows, c.dim, 12);
    set_simd_level(SimdLevel::kScalar);
    std::vector<float> dec(x.size()), want(x.size());
    codec.decode(codes.data(), rows, dec.data());
    for (size_t i = 0; i < want.size(); ++i) want[i] = y0[i] + dec[i];
    for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
      set_simd_level(SimdLevel(lv));
      std::vector<float> y = y0;
      codec.decode_add(codes.data(), rows, y.data());
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(want[i]), std::bit_cast<uint32_t>(y[i]))
            << codec.spec() << " dim " << c.dim << " level " << lv << " row " << i / size_t(c.dim) << " col " << i % size_t(c.dim);
    }
    set_simd_level(saved);
  }
}

// HiggsCodec::decode by the letter of quant/higgs.h, with none of the codec's code: codes by
// unpack_bits (clamped to n - 1: bytes that encode never writes stay inside the grid), the
// points times rms / sqrt(g), then D H_g (HadamardRotation::inverse, scale 1, scalar level)
// unless rms is 0.
std::vector<float> reference_decode(const Grid& grid, int64_t dim, int64_t g, uint64_t seed, const uint8_t* in,
                                    int64_t rows) {
  const int64_t ng = dim / g, ncodes = dim / grid.d;
  const int bits = bits_for_count(grid.n);
  const int64_t row_bytes = 2 * ng + packed_bytes(ncodes, bits);
  const HadamardRotation rot(g, seed);
  const SimdLevel saved = simd_level();
  set_simd_level(SimdLevel::kScalar);
  std::vector<float> x(size_t(rows * dim));
  std::vector<uint16_t> codes(static_cast<size_t>(ncodes));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * row_bytes;
    unpack_bits(o + 2 * ng, ncodes, bits, codes.data());
    float* xr = x.data() + r * dim;
    for (int64_t c = 0; c < ncodes; ++c) {
      const int64_t code = std::min<int64_t>(codes[size_t(c)], grid.n - 1);
      for (int j = 0; j < grid.d; ++j) xr[c * grid.d + j] = grid.points[size_t(code * grid.d + j)];
    }
    for (int64_t k = 0; k < ng; ++k) {
      const float rms = fp16_to_fp32(uint16_t(o[2 * k] | o[2 * k + 1] << 8));
      const float f = rms * float(1.0 / std::sqrt(double(g)));
      for (int64_t i = 0; i < g; ++i) xr[k * g + i] *= f;
      if (rms != 0.0f) rot.inverse(xr + k * g, 1, 1.0f);
    }
  }
  set_simd_level(saved);
  return x;
}

// decode and decode_add of the rows in `bytes` equal `want` and y0 + want bit for bit at every
// SIMD level up to the CPU's (y0: Gaussian rows of `seed`); the caller restores the level.
void expect_decodes_as(const HiggsCodec& codec, const std::vector<uint8_t>& bytes, int64_t rows,
                       const std::vector<float>& want, uint64_t seed) {
  const auto y0 = gaussian_rows(rows, codec.dim(), seed);
  for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
    set_simd_level(SimdLevel(lv));
    std::vector<float> x(want.size()), y = y0;
    codec.decode(bytes.data(), rows, x.data());
    codec.decode_add(bytes.data(), rows, y.data());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(want[i]), std::bit_cast<uint32_t>(x[i])) << "decode, level " << lv << " value " << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(y0[i] + want[i]), std::bit_cast<uint32_t>(y[i])) << "decode_add, level " << lv << " value " << i;
    }
  }
}

// Any bytes (random codes, finite scales, some zero) decode, and decode_add, exactly as the
// reference above at every SIMD level: the fused AVX-512 groups of 192 (2x16, 2x64, 2x256,
// 4x16, 8x65536 and a 16-bit grid of 40000 points, whose codes >= 40000 must clamp), the direct
// code reads of the scalar gather (16-, 8- and 4-bit codes, 2x64's 3-byte words) and the
// fallbacks (signs, groups of 64).
TEST(Higgs, AnyBytesDecodeAsTheReferenceAtEveryLevel) {
  Grid wide{"gauss8x40000", 8, 40000, {}};
  {
    GaussRng rng(21);
    wide.points.resize(size_t(wide.n * wide.d));
    for (auto& v : wide.points) v = float(rng.normal());
  }
  struct GridCase {
    const Grid* grid;
    int64_t dim, g;
    uint64_t seed;
  };
  const GridCase cases[] = {
      {&builtin_grid(2, 16), 192, 192, 0},    {&builtin_grid(2, 64), 192, 192, 0},
      {&builtin_grid(2, 256), 192, 192, 0},   {&builtin_grid(4, 16), 192, 192, 0},
      {&builtin_grid(4, 16), 384, 192, 0},    {&builtin_grid(4, 16), 192, 64, 0},
      {&builtin_grid(4, 16), 192, 192, 5},    {&builtin_grid(8, 65536), 192, 192, 0},
      {&builtin_grid(8, 65536), 384, 192, 0}, {&builtin_grid(8, 65536), 192, 64, 0},
      {&builtin_grid(8, 65536), 192, 192, 3}, {&wide, 192, 192, 0},
      {&wide, 192, 64, 0},                    {&builtin_grid(4, 256), 192, 192, 0},
      {&builtin_grid(2, 64), 192, 64, 0},     {&builtin_grid(1, 4), 192, 192, 0}};
  const SimdLevel saved = simd_level();
  for (const GridCase& c : cases) {
    const HiggsCodec codec(c.dim, c.g, *c.grid, c.seed);
    SCOPED_TRACE(codec.spec() + " dim " + std::to_string(c.dim));
    const int64_t rows = 29, ng = c.dim / c.g;
    std::vector<uint8_t> bytes(size_t(codec.encoded_bytes(rows)));
    GaussRng rng(31);
    for (auto& b : bytes) b = uint8_t(rng.next_u64() >> 56);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < ng; ++k) {  // finite scales from 0 up to fp16's largest
        const float rms = r == 0 && k == 0 ? 0.0f : r == 1 ? 65504.0f : float(4.0 * rng.uniform());
        const uint16_t h = fp32_to_fp16(rms);
        bytes[size_t(r * codec.block_bytes() + 2 * k)] = uint8_t(h);
        bytes[size_t(r * codec.block_bytes() + 2 * k + 1)] = uint8_t(h >> 8);
      }
    }
    const auto want = reference_decode(*c.grid, c.dim, c.g, c.seed, bytes.data(), rows);
    expect_decodes_as(codec, bytes, rows, want, 12);
    set_simd_level(saved);
    if (HasFatalFailure()) return;
  }
}

// E8P in groups of 192 is decoded from its sign patterns (the points rebuilt as s (.) a +
// sigma), not from the float table: every one of the 65536 codes, in rows with scales from 0 to
// fp16's largest, decodes and decode_adds exactly as the reference (the table's points) at every
// SIMD level; E8P in groups of 64 and a random 8-dimensional grid have no such patterns.
TEST(Higgs, E8pSignPatternsRebuildEveryPoint) {
  const Grid& e8p = builtin_grid(8, 65536);
  const HiggsCodec codec(192, 192, e8p, 0);
  ASSERT_TRUE(codec.has_sign_patterns());
  EXPECT_FALSE(HiggsCodec(192, 64, e8p, 0).has_sign_patterns());
  Grid random8{"gauss8x256", 8, 256, {}};
  GaussRng rng(41);
  for (int64_t i = 0; i < 256 * 8; ++i) random8.points.push_back(float(rng.normal()));
  EXPECT_FALSE(HiggsCodec(192, 192, random8, 0).has_sign_patterns());
  const int64_t rows = 65536 / 24 + 1;
  std::vector<uint8_t> bytes(size_t(codec.encoded_bytes(rows)));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* o = bytes.data() + r * codec.block_bytes();
    const float rms = r == 0 ? 0.0f : r == 1 ? 65504.0f : float(0.01 + 4.0 * rng.uniform());
    const uint16_t h = fp32_to_fp16(rms);
    o[0] = uint8_t(h);
    o[1] = uint8_t(h >> 8);
    for (int64_t c = 0; c < 24; ++c) {
      const uint32_t code = uint32_t((r * 24 + c) % 65536);
      o[2 + 2 * c] = uint8_t(code);
      o[3 + 2 * c] = uint8_t(code >> 8);
    }
  }
  const auto want = reference_decode(e8p, 192, 192, 0, bytes.data(), rows);
  const SimdLevel saved = simd_level();
  expect_decodes_as(codec, bytes, rows, want, 13);
  set_simd_level(saved);
}

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> b(s.size() / 2);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return b;
}

TEST(Higgs, GoldenRowsFromIndependentImplementation) {
  std::ifstream f(std::string(AQUAKV_TEST_DATA) + "/quant_goldens.json");
  ASSERT_TRUE(f) << "missing tests/data/quant_goldens.json";
  const auto j = nlohmann::json::parse(f);
  int checked = 0;
  for (const auto& c : j["cases"]) {
    const std::string spec = c["spec"];
    if (spec.rfind("higgs:", 0) != 0) continue;
    const int64_t dim = c["dim"], rows = c["rows"];
    const auto codec = make_codec(spec, dim);
    const auto* h = dynamic_cast<const HiggsCodec*>(codec.get());
    ASSERT_NE(h, nullptr);
    const std::vector<float> x = c["x"].get<std::vector<float>>();
    std::vector<uint8_t> got(size_t(codec->encoded_bytes(rows)));
    codec->encode(x.data(), rows, got.data());
    const int64_t ng = dim / h->group(), cpr = dim / h->grid().d;
    int64_t near_tie_flips = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const auto want = unhex(c["bytes"][size_t(r)]);
      ASSERT_EQ(int64_t(want.size()), codec->block_bytes()) << spec;
      const uint8_t* g = got.data() + r * codec->block_bytes();
      for (int64_t k = 0; k < 2 * ng; ++k) ASSERT_EQ(g[k], want[size_t(k)]) << spec << " row " << r << " scale byte " << k;
      std::vector<uint16_t> cg(static_cast<size_t>(cpr)), cw(static_cast<size_t>(cpr));
      unpack_bits(g + 2 * ng, cpr, h->code_bits(), cg.data());
      unpack_bits(want.data() + 2 * ng, cpr, h->code_bits(), cw.data());
      for (int64_t i = 0; i < cpr; ++i) {
        const double margin = c["margins"][size_t(r)][size_t(i)];
        ASSERT_EQ(int(cw[size_t(i)]), int(c["codes"][size_t(r)][size_t(i)]));
        if (cg[size_t(i)] != cw[size_t(i)]) {
          // Only a float32-vs-float64 near tie may differ.
          ASSERT_LT(margin, 1e-4) << spec << " row " << r << " code " << i;
          ++near_tie_flips;
        }
      }
      // Decoding the golden bytes matches the float64 decode.
      std::vector<float> y(static_cast<size_t>(dim));
      codec->decode(want.data(), 1, y.data());
      for (int64_t i = 0; i < dim; ++i) {
        const double ref = c["decoded"][size_t(r * dim + i)];
        ASSERT_NEAR(y[size_t(i)], ref, 2e-6 * (1 + std::fabs(ref)) * std::sqrt(double(h->group()))) << spec << " row " << r << " value " << i;
      }
      ++checked;
    }
    EXPECT_LE(near_tie_flips, 1) << spec;
  }
  EXPECT_GE(checked, 20);
}

// The inner basis (quant/codec.h): decode = T decode_inner row by row, and q . decode(c) =
// (T^T q) . decode_inner(c), checked in float64 against the decoded rows, for every group size
// and with random signs. Bound: float rounding of the transforms, 1e-5 relative to |q| |x|.
TEST(Higgs, InnerBasisMatchesDecode) {
  const int64_t dim = 192, rows = 7;
  for (const char* spec : {"higgs:2x16", "higgs:2x16:g64", "higgs:2x64:g32", "higgs:2x256", "higgs:2x16:seed3"}) {
    SCOPED_TRACE(spec);
    auto c = make_codec(spec, dim);
    ASSERT_GT(c->inner_group(), 0);
    const auto x = gaussian_rows(rows, dim, 5);
    std::vector<uint8_t> codes(size_t(c->encoded_bytes(rows)));
    c->encode(x.data(), rows, codes.data());
    std::vector<float> dec(x.size()), u(x.size());
    c->decode(codes.data(), rows, dec.data());
    c->decode_inner(codes.data(), rows, u.data());
    std::vector<float> tu = u;
    c->inner_to_rows(tu.data(), rows);
    auto q = gaussian_rows(1, dim, 9);
    std::vector<float> qt = q;
    c->transpose_to_inner(qt.data(), 1);
    for (int64_t r = 0; r < rows; ++r) {
      double want = 0, got = 0, nq = 0, nx = 0;
      for (int64_t i = 0; i < dim; ++i) {
        const size_t k = size_t(r * dim + i);
        EXPECT_NEAR(tu[k], dec[k], 1e-5 * (1 + std::fabs(dec[k])));
        want += double(q[size_t(i)]) * dec[k];
        got += double(qt[size_t(i)]) * u[k];
        nq += double(q[size_t(i)]) * q[size_t(i)];
        nx += double(dec[k]) * dec[k];
      }
      EXPECT_NEAR(got, want, 1e-5 * std::sqrt(nq * nx));
    }
  }
  EXPECT_EQ(make_codec("q8_0", dim)->inner_group(), 0);
}

}  // namespace
}  // namespace aquakv
