// Tests of quant/codec.h's factory and the baseline codecs (fp16, uniform min-max per token and
// per channel): spec parsing and errors, bits accounting, error bounds derived from the format;
// the channel-scaled wrapper's decode and decode_add at every SIMD level.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "aquakv/quant/block_codecs.h"
#include "aquakv/quant/channel_scaled_codec.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

std::vector<float> rows_of(int64_t rows, int64_t dim, uint64_t seed) {
  GaussRng rng(seed);
  std::vector<float> x(size_t(rows * dim));
  for (auto& v : x) v = float(2.0 * rng.normal() + 0.5);
  return x;
}

TEST(CodecFactory, SpecsAndBits) {
  struct Want {
    const char* spec;
    KvStream stream;
    const char* canonical;
    int64_t block_rows;
    double bits;
  };
  const Want wants[] = {
      {"fp16", KvStream::kAny, "fp16", 1, 16.0},
      {"uniform:4", KvStream::kAny, "uniform:4:g32:token", 1, 4.0 + 32.0 / 32},
      {"uniform:2:g64:token", KvStream::kAny, "uniform:2:g64:token", 1, 2.0 + 32.0 / 64},
      {"uniform:3:g16:channel", KvStream::kAny, "uniform:3:g16:channel", 16, 3.0 + 32.0 / 16},
      {"kivi2", KvStream::kKey, "uniform:2:g32:channel", 32, 3.0},
      {"kivi2", KvStream::kValue, "uniform:2:g32:token", 1, 3.0},
      {"kivi4", KvStream::kValue, "uniform:4:g32:token", 1, 5.0},
      {"kivi3", KvStream::kKey, "uniform:3:g32:channel", 32, 4.0},
      {"kivi3", KvStream::kValue, "uniform:3:g32:token", 1, 4.0},
      {"higgs:2x16", KvStream::kAny, "higgs:2x16:g192", 1, 2.0 + 16.0 / 192},
      {"higgs:2x16:g64:seed3", KvStream::kAny, "higgs:2x16:g64:seed3", 1, 2.0 + 16.0 / 64},
      {"higgs2", KvStream::kAny, "higgs:2x16:g192", 1, 2.0 + 16.0 / 192},
      {"higgs3", KvStream::kAny, "higgs:2x64:g192", 1, 3.0 + 16.0 / 192},
      {"higgs4", KvStream::kAny, "higgs:2x256:g192", 1, 4.0 + 16.0 / 192},
      {"higgs:4x256:g64", KvStream::kAny, "higgs:4x256:g64", 1, 2.0 + 16.0 / 64},
  };
  for (const auto& w : wants) {
    const auto c = make_codec(w.spec, 192, w.stream);
    EXPECT_EQ(c->spec(), w.canonical) << w.spec;
    EXPECT_EQ(c->dim(), 192);
    EXPECT_EQ(c->block_rows(), w.block_rows) << w.spec;
    EXPECT_DOUBLE_EQ(c->bits_per_value(), w.bits) << w.spec;
    EXPECT_EQ(c->encoded_bytes(5 * c->block_rows()), 5 * c->block_bytes());
    // The canonical spec builds the same codec.
    EXPECT_EQ(make_codec(c->spec(), 192)->spec(), c->spec());
  }
}

TEST(CodecFactory, BadSpecsAreClearErrors) {
  const char* bad[] = {"", "fp32", "uniform", "uniform:0", "uniform:9", "uniform:x", "uniform:2:g0",
                       "uniform:2:g100", "uniform:2:tokens", "uniform:2:g32:token:extra",
                       "higgs", "higgs:", "higgs:2", "higgs:2x", "higgs:0x16", "higgs:2x65537",
                       "higgs:2x1", "higgs:3x16", "higgs:2x16:g100", "higgs:2x16:g128", "higgs:2x16:q",
                       "higgs:2x16:seedx", "higgs:2x16:grid=", "higgs:2x16:grid=/nonexistent.f32le",
                       "kivi2", "kivi3", "kivi5", "kivi1", "q5_1"};
  for (const char* s : bad) {
    EXPECT_THROW(make_codec(s, 192), Error) << s;
    try {
      make_codec(s, 192);
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      EXPECT_FALSE(std::string(e.what()).empty());
    }
  }
  EXPECT_THROW(make_codec("fp16", 0), Error);
  try {
    make_codec("uniform:9", 192);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[1, 8], got 9"), std::string::npos) << e.what();
  }
}

TEST(Fp16Codec, MatchesScalarConversion) {
  const auto c = make_codec("fp16", 40);
  auto x = rows_of(3, 40, 1);
  x[5] = 1e6f;
  x[6] = -1e-8f;
  std::vector<uint8_t> b(size_t(c->encoded_bytes(3)));
  std::vector<float> y(x.size());
  std::vector<uint16_t> h(x.size());
  c->encode(x.data(), 3, b.data());
  c->decode(b.data(), 3, y.data());
  c->decode_fp16(b.data(), 3, h.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t want = fp32_to_fp16(x[i]);
    ASSERT_EQ(uint16_t(b[2 * i] | (b[2 * i + 1] << 8)), want) << i;
    ASSERT_EQ(h[i], want);
    ASSERT_EQ(y[i], fp16_to_fp32(want));
  }
}

// Per-value bound of the uniform format: |x - xhat| <= s/2 from rounding, plus the fp16 rounding
// of the zero point and the code*scale product (relative 2^-11 of the range), plus clamping.
void check_uniform(const Codec& c, const std::vector<float>& x, int bits, bool per_channel, int64_t g) {
  const int64_t dim = c.dim(), rows = int64_t(x.size()) / dim;
  std::vector<uint8_t> b(size_t(c.encoded_bytes(rows)));
  std::vector<float> y(x.size());
  c.encode(x.data(), rows, b.data());
  c.decode(b.data(), rows, y.data());
  const int qmax = (1 << bits) - 1;
  double err = 0, expected = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < dim; ++i) {
      // The group of (r, i): its min and max.
      float mn = INFINITY, mx = -INFINITY;
      if (per_channel) {
        const int64_t r0 = r / g * g;
        for (int64_t t = r0; t < r0 + g; ++t) { mn = std::min(mn, x[size_t(t * dim + i)]); mx = std::max(mx, x[size_t(t * dim + i)]); }
      } else {
        const int64_t i0 = i / g * g;
        for (int64_t t = i0; t < i0 + g; ++t) { mn = std::min(mn, x[size_t(r * dim + t)]); mx = std::max(mx, x[size_t(r * dim + t)]); }
      }
      const double range = double(mx) - mn;
      const double bound = range / qmax * (0.5 + 2e-3 * qmax) + 2e-3 * (std::fabs(mn) + range);
      const double e = std::fabs(double(x[size_t(r * dim + i)]) - y[size_t(r * dim + i)]);
      ASSERT_LE(e, bound) << c.spec() << " row " << r << " col " << i;
      err += e * e;
      expected += range * range / (12.0 * qmax * qmax);  // uniform rounding error, step range/qmax
    }
  }
  // With >= 3 bits the rounding error is close to uniform on [-s/2, s/2]: variance s^2/12.
  if (bits >= 3) {
    EXPECT_NEAR(err / expected, 1.0, 0.2) << c.spec();
  }
}

TEST(UniformCodec, PerTokenAndPerChannelErrorBounds) {
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t g : {16, 32, 64}) {
      const UniformCodec tok(192, bits, g, UniformAxis::kToken);
      check_uniform(tok, rows_of(7, 192, uint64_t(bits * 100 + g)), bits, false, g);
      const UniformCodec ch(192, bits, g, UniformAxis::kChannel);
      check_uniform(ch, rows_of(3 * g, 192, uint64_t(bits * 1000 + g)), bits, true, g);
    }
  }
}

// Every SIMD level the CPU has decodes the same bytes to the same floats (the kernels multiply
// and add separately, as the scalar loop does), both axes, widths with and without byte tables.
TEST(UniformCodec, SimdLevelsDecodeIdentically) {
  const SimdLevel saved = simd_level();
  // Width 200 (groups of 40: the AVX-512 kernel declines) and 192 with groups of 32 (KIVI on the
  // default model: the AVX-512 kernel runs).
  for (const int64_t dim : {200, 192})
  for (int bits : {2, 3, 4, 8}) {
    for (const UniformAxis axis : {UniformAxis::kToken, UniformAxis::kChannel}) {
      const UniformCodec c(dim, bits, axis == UniformAxis::kToken && dim == 200 ? 40 : 32, axis);
      const int64_t rows = 64;
      const auto x = rows_of(rows, dim, uint64_t(bits));
      std::vector<uint8_t> codes(size_t(c.encoded_bytes(rows)));
      c.encode(x.data(), rows, codes.data());
      set_simd_level(SimdLevel::kScalar);
      std::vector<float> want(x.size()), got(x.size());
      c.decode(codes.data(), rows, want.data());
      for (int lv = 1; lv <= int(cpu_simd_level()); ++lv) {
        set_simd_level(SimdLevel(lv));
        c.decode(codes.data(), rows, got.data());
        ASSERT_EQ(got, want) << "dim " << dim << " bits " << bits << " level " << lv;
      }
    }
  }
  set_simd_level(saved);
}

TEST(UniformCodec, ConstantGroupsAndExtremes) {
  const UniformCodec c(64, 2, 32, UniformAxis::kToken);
  std::vector<float> x(64, 3.0f);
  for (int i = 32; i < 64; ++i) x[size_t(i)] = i % 2 ? 2.0f : -1.0f;  // scale 1, zero -1: exact
  std::vector<uint8_t> b(size_t(c.encoded_bytes(1)));
  std::vector<float> y(64);
  c.encode(x.data(), 1, b.data());
  c.decode(b.data(), 1, y.data());
  EXPECT_EQ(y, x);
}

TEST(UniformCodec, BlocksAreIndependent) {
  // Per-channel blocks: encoding rows [0, 2g) equals encoding [0, g) and [g, 2g) separately.
  const UniformCodec c(48, 3, 8, UniformAxis::kChannel);
  const auto x = rows_of(16, 48, 9);
  std::vector<uint8_t> all(size_t(c.encoded_bytes(16))), part(all.size());
  c.encode(x.data(), 16, all.data());
  c.encode(x.data(), 8, part.data());
  c.encode(x.data() + 8 * 48, 8, part.data() + c.block_bytes());
  EXPECT_EQ(all, part);
}

TEST(UniformCodec, RejectsBadParameters) {
  EXPECT_THROW(UniformCodec(192, 0, 32, UniformAxis::kToken), Error);
  EXPECT_THROW(UniformCodec(192, 9, 32, UniformAxis::kToken), Error);
  EXPECT_THROW(UniformCodec(192, 2, 0, UniformAxis::kChannel), Error);
  EXPECT_THROW(UniformCodec(192, 2, 50, UniformAxis::kToken), Error);
  EXPECT_NO_THROW(UniformCodec(192, 2, 50, UniformAxis::kChannel));  // any token block size
}

TEST(Codec, DecodeFp16EqualsRoundedDecode) {
  for (const char* spec : {"higgs:2x16", "uniform:3:g32:token", "uniform:2:g8:channel"}) {
    const auto c = make_codec(spec, 192);
    const int64_t rows = 64;
    const auto x = rows_of(rows, 192, 4);
    std::vector<uint8_t> b(size_t(c->encoded_bytes(rows)));
    std::vector<float> y(x.size());
    std::vector<uint16_t> h(x.size());
    c->encode(x.data(), rows, b.data());
    c->decode(b.data(), rows, y.data());
    c->decode_fp16(b.data(), rows, h.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(h[i], fp32_to_fp16(y[i])) << spec << " " << i;
  }
}

}  // namespace
}  // namespace aquakv

namespace aquakv {
namespace {

std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> b(s.size() / 2);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return b;
}

TEST(GgmlBlockCodec, BitExactWithGgufPackage) {
  // Goldens: gguf.quants.quantize / dequantize (scripts/make_quant_goldens.py).
  std::ifstream f(std::string(AQUAKV_TEST_DATA) + "/quant_goldens.json");
  ASSERT_TRUE(f) << "missing tests/data/quant_goldens.json";
  const auto j = nlohmann::json::parse(f);
  int checked = 0;
  for (const auto& c : j["cases"]) {
    const std::string spec = c["spec"];
    if (spec != "q8_0" && spec != "q4_0") continue;
    const int64_t dim = c["dim"], rows = c["rows"];
    const auto codec = make_codec(spec, dim);
    EXPECT_DOUBLE_EQ(codec->bits_per_value(), spec == "q8_0" ? 8.5 : 4.5);
    const std::vector<float> x = c["x"].get<std::vector<float>>();
    const std::vector<float> want_y = c["decoded"].get<std::vector<float>>();
    std::vector<uint8_t> got(size_t(codec->encoded_bytes(rows)));
    codec->encode(x.data(), rows, got.data());
    for (int64_t r = 0; r < rows; ++r) {
      const auto want = unhex(c["bytes"][size_t(r)]);
      ASSERT_EQ(std::vector<uint8_t>(got.begin() + r * codec->block_bytes(), got.begin() + (r + 1) * codec->block_bytes()), want)
          << spec << " row " << r;
    }
    std::vector<float> y(x.size());
    codec->decode(got.data(), rows, y.data());
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], want_y[i]) << spec << " value " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 2);
  EXPECT_THROW(make_codec("q8_0", 48), Error);
  EXPECT_THROW(make_codec("q4_0", 0), Error);
}

// ChannelScaledCodec at every SIMD level: decode equals the scalar level's decode, and decode_add
// equals y + that decode bit for bit (decode's rounded products x * (1 / s), then the sums).
// Around the plan codecs of 192-wide rows, fp16 and a two-row-block codec, over more rows than
// one internal step; width 100 leaves tails after whole 8- and 16-float vectors.
TEST(ChannelScaledCodec, DecodeAndDecodeAddAtEveryLevel) {
  struct Case {
    const char* spec;
    int64_t dim;
  };
  const int64_t rows = 50;
  const SimdLevel saved = simd_level();
  for (const Case& c : {Case{"higgs:8x65536:g192", 192}, Case{"higgs:2x64:g192", 192}, Case{"higgs:4x16:g192", 192},
                        Case{"higgs:2x256:g192", 192}, Case{"higgs:2x16:g64", 192}, Case{"fp16", 192},
                        Case{"fp16", 100}, Case{"uniform:4:g2:channel", 100}}) {
    SCOPED_TRACE(std::string(c.spec) + " dim " + std::to_string(c.dim));
    std::vector<float> scales(static_cast<size_t>(c.dim));
    GaussRng rng(3);
    for (auto& s : scales) s = float(std::exp(rng.normal()));
    const ChannelScaledCodec codec(std::shared_ptr<const Codec>(make_codec(c.spec, c.dim)), scales);
    const auto x = rows_of(rows, c.dim, 4);
    std::vector<uint8_t> codes(size_t(codec.encoded_bytes(rows)));
    codec.encode(x.data(), rows, codes.data());
    const auto y0 = rows_of(rows, c.dim, 5);
    set_simd_level(SimdLevel::kScalar);
    std::vector<float> dec(x.size());
    codec.decode(codes.data(), rows, dec.data());
    for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
      set_simd_level(SimdLevel(lv));
      std::vector<float> d(x.size()), y = y0;
      codec.decode(codes.data(), rows, d.data());
      codec.decode_add(codes.data(), rows, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(dec[i]), std::bit_cast<uint32_t>(d[i])) << "decode, level " << lv << " value " << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(y0[i] + dec[i]), std::bit_cast<uint32_t>(y[i])) << "decode_add, level " << lv << " value " << i;
      }
    }
    set_simd_level(saved);
  }
}

}  // namespace
}  // namespace aquakv
