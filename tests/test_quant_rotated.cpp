// Tests of the rotated block codecs (quant/rotated_block_codec.h): spec parsing and refusals,
// bits accounting, decode against a float64 rotation of the plain block decoder, and the
// round-trip bound carried from the block format through the orthonormal rotation.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "aquakv/quant/codec.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// x ~ N(0.5, 2^2), plus (outliers) one channel per head at 40x: the case rotation is for.
std::vector<float> rows_of(int64_t rows, int64_t dim, uint64_t seed, int64_t head = 0) {
  GaussRng rng(seed);
  std::vector<float> x(size_t(rows * dim));
  for (auto& v : x) v = float(2.0 * rng.normal() + 0.5);
  if (head > 0)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 5; c < dim; c += head) x[size_t(r * dim + c)] *= 40.0f;
  return x;
}

// R = H_h / sqrt(h) in float64, H from its definition H[a][b] = (-1)^popcount(a & b)
// (Sylvester order; h a power of two). R is symmetric and orthonormal, so R^-1 = R.
std::vector<double> rotate(const float* x, int64_t n, int64_t h) {
  std::vector<double> y(size_t(n), 0.0);
  const double s = 1.0 / std::sqrt(double(h));
  for (int64_t base = 0; base < n; base += h)
    for (int64_t a = 0; a < h; ++a) {
      double acc = 0;
      for (int64_t b = 0; b < h; ++b)
        acc += (std::popcount(uint64_t(a & b)) % 2 ? -1.0 : 1.0) * double(x[base + b]);
      y[size_t(base + a)] = acc * s;
    }
  return y;
}

TEST(RotatedBlockCodec, SpecsAndBits) {
  struct Want {
    const char* spec;
    int64_t dim;
    const char* canonical;
    double bits;
  };
  const Want wants[] = {
      {"q8_0r", 192, "q8_0r:h64", 8.5},   {"q4_0r", 192, "q4_0r:h64", 4.5},
      {"q4_1r", 192, "q4_1r:h64", 5.0},   {"q4_0r:h32", 192, "q4_0r:h32", 4.5},
      {"q4_0r", 256, "q4_0r:h128", 4.5},  {"q4_0r:h96", 192, "q4_0r:h96", 4.5},
      {"q4_1", 192, "q4_1", 5.0},
  };
  for (const auto& w : wants) {
    const auto c = make_codec(w.spec, w.dim);
    EXPECT_EQ(c->spec(), w.canonical) << w.spec;
    EXPECT_EQ(c->block_rows(), 1);
    EXPECT_DOUBLE_EQ(c->bits_per_value(), w.bits) << w.spec;
    EXPECT_EQ(make_codec(c->spec(), w.dim)->spec(), c->spec());
  }
}

TEST(RotatedBlockCodec, BadSpecsAreClearErrors) {
  const char* bad[] = {"q4_0r:",     "q4_0r:h",    "q4_0r:hx",   "q4_0r:h0", "q4_0r:h16",
                       "q4_0r:h48",  "q4_0r:h128", "q4_0r:h64:x", "q4_0r:64", "q5_0r",
                       "q8_0r:h-32", "q4_2r",      "q4_0rr"};
  for (const char* s : bad) {
    try {
      make_codec(s, 192);
      ADD_FAILURE() << s << " was accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
      EXPECT_NE(m.find(s), std::string::npos) << "message does not name the spec: " << m;
    }
  }
  EXPECT_THROW(make_codec("q8_0r", 48), Error);  // not a multiple of 32
  EXPECT_THROW(make_codec("q4_0r", 0), Error);
}

// Decoding is R applied to the plain block decoder's output (R^-1 = R).
TEST(RotatedBlockCodec, DecodeIsRotatedPlainDecode) {
  for (const char* kind : {"q8_0", "q4_0", "q4_1"}) {
    for (int64_t h : {32, 64}) {
      const auto rc = make_codec(std::string(kind) + "r:h" + std::to_string(h), 192);
      const auto plain = make_codec(kind, 192);
      const int64_t rows = 9;
      const auto x = rows_of(rows, 192, 3, h);
      std::vector<uint8_t> b(size_t(rc->encoded_bytes(rows)));
      rc->encode(x.data(), rows, b.data());
      std::vector<float> z(x.size()), y(x.size());
      plain->decode(b.data(), rows, z.data());
      rc->decode(b.data(), rows, y.data());
      const auto want = rotate(z.data(), int64_t(z.size()), h);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], want[i], 1e-5 * (1.0 + std::fabs(want[i]))) << kind << " h" << h << " " << i;
    }
  }
}

// The inner basis (quant/codec.h): u = decode_inner is the plain block decoder's output, T u
// the float64 rotation of u (so decode = T decode_inner), and q . decode(c) = (T^T q) . u, all
// against the float64 Sylvester rotation above. Bound: float rounding of the FWHT, 1e-5
// relative.
TEST(RotatedBlockCodec, InnerBasisIsTheRotatedBasis) {
  for (const char* kind : {"q8_0", "q4_0", "q4_1"}) {
    for (int64_t h : {32, 64}) {
      SCOPED_TRACE(std::string(kind) + " h" + std::to_string(h));
      const auto rc = make_codec(std::string(kind) + "r:h" + std::to_string(h), 192);
      const auto plain = make_codec(kind, 192);
      ASSERT_EQ(rc->inner_group(), h);
      const int64_t rows = 5, dim = 192;
      const auto x = rows_of(rows, dim, 4, h);
      std::vector<uint8_t> b(size_t(rc->encoded_bytes(rows)));
      rc->encode(x.data(), rows, b.data());
      std::vector<float> z(x.size()), u(x.size());
      plain->decode(b.data(), rows, z.data());
      rc->decode_inner(b.data(), rows, u.data());
      for (size_t i = 0; i < u.size(); ++i) ASSERT_EQ(u[i], z[i]) << i;
      std::vector<float> tu = u;
      rc->inner_to_rows(tu.data(), rows);
      const auto want = rotate(u.data(), int64_t(u.size()), h);
      for (size_t i = 0; i < tu.size(); ++i) ASSERT_NEAR(tu[i], want[i], 1e-5 * (1.0 + std::fabs(want[i]))) << i;
      const auto q = rows_of(1, dim, 6);
      std::vector<float> qt = q;
      rc->transpose_to_inner(qt.data(), 1);
      const auto rq = rotate(q.data(), dim, h);  // T^T q = R q
      for (int64_t r = 0; r < rows; ++r) {
        double got = 0, wantd = 0, nq = 0, nx = 0;
        for (int64_t i = 0; i < dim; ++i) {
          got += double(qt[size_t(i)]) * u[size_t(r * dim + i)];
          wantd += double(q[size_t(i)]) * want[size_t(r * dim + i)];
          nq += double(q[size_t(i)]) * q[size_t(i)];
          nx += want[size_t(r * dim + i)] * want[size_t(r * dim + i)];
          EXPECT_NEAR(qt[size_t(i)], rq[size_t(i)], 1e-5 * (1.0 + std::fabs(rq[size_t(i)])));
        }
        EXPECT_NEAR(got, wantd, 1e-5 * std::sqrt(nq * nx));
      }
    }
  }
}

// Per-value error bound of a block in the rotated basis (z: the 32 rotated values), from the
// block formats of ops/ggml_quantize.h; fp16 rounding of the scale d (and of q4_1's minimum)
// adds |q| * |d| * 2^-11 (resp. |min| * 2^-11).
double block_bound(const std::string& kind, const double* z) {
  double amax = 0, mn = z[0], mx = z[0];
  for (int i = 0; i < 32; ++i) {
    amax = std::max(amax, std::fabs(z[i]));
    mn = std::min(mn, z[i]);
    mx = std::max(mx, z[i]);
  }
  const double u = std::ldexp(1.0, -11), slack = 1e-5 * (amax + 1e-30);
  if (kind == "q8_0") return amax / 127 * (0.5 + 127 * u) + slack;
  // q4_0: d = -m/8 (m the largest-magnitude value): the other sign's end clamps at 7|d|, an
  // error of up to |d|; elsewhere rounding, |d|/2.
  if (kind == "q4_0") return amax / 8 * (1.0 + 8 * u) + slack;
  const double d = (mx - mn) / 15;  // q4_1
  return d * (0.5 + 15 * u) + std::fabs(mn) * u + slack;
}

// ||x - x^||_2 per head equals the rotated-basis error norm, which the block bounds cap.
TEST(RotatedBlockCodec, RoundTripNormBoundPerHead) {
  for (const char* kind : {"q8_0", "q4_0", "q4_1"}) {
    for (int64_t h : {32, 64}) {
      for (bool outliers : {false, true}) {
        const auto c = make_codec(std::string(kind) + "r:h" + std::to_string(h), 192);
        const int64_t rows = 17;
        const auto x = rows_of(rows, 192, 11 + uint64_t(h), outliers ? h : 0);
        std::vector<uint8_t> b(size_t(c->encoded_bytes(rows)));
        std::vector<float> y(x.size());
        c->encode(x.data(), rows, b.data());
        c->decode(b.data(), rows, y.data());
        const auto z = rotate(x.data(), int64_t(x.size()), h);
        for (int64_t base = 0; base < int64_t(x.size()); base += h) {
          double bound2 = 0, err2 = 0, norm2 = 0;
          for (int64_t blk = base; blk < base + h; blk += 32) {
            const double bb = block_bound(kind, z.data() + blk);
            bound2 += 32 * bb * bb;
          }
          for (int64_t i = base; i < base + h; ++i) {
            err2 += (double(x[size_t(i)]) - y[size_t(i)]) * (double(x[size_t(i)]) - y[size_t(i)]);
            norm2 += double(x[size_t(i)]) * x[size_t(i)];
          }
          ASSERT_LE(std::sqrt(err2), std::sqrt(bound2) + 1e-6 * std::sqrt(norm2))
              << kind << " h" << h << " head at " << base << (outliers ? " (outliers)" : "");
        }
      }
    }
  }
}

// The point of rotating: with one large channel per head, plain blocks spend their scale on it;
// rotated blocks do not. Mean squared error drops for the 4-bit formats.
TEST(RotatedBlockCodec, RotationHelpsWithOutlierChannels) {
  for (const char* kind : {"q4_0", "q4_1"}) {
    const auto rc = make_codec(std::string(kind) + "r", 192);
    const auto plain = make_codec(kind, 192);
    const int64_t rows = 64;
    const auto x = rows_of(rows, 192, 5, 64);
    auto mse = [&](const Codec& c) {
      std::vector<uint8_t> b(size_t(c.encoded_bytes(rows)));
      std::vector<float> y(x.size());
      c.encode(x.data(), rows, b.data());
      c.decode(b.data(), rows, y.data());
      double e = 0;
      for (size_t i = 0; i < x.size(); ++i) e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
      return e / double(x.size());
    };
    EXPECT_LT(mse(*rc), 0.5 * mse(*plain)) << kind;
  }
}

TEST(RotatedBlockCodec, RowsAreIndependent) {
  // Batch encoding (across the 256-row scratch chunks) equals row-by-row encoding.
  const auto c = make_codec("q4_0r", 192);
  const int64_t rows = 300;
  const auto x = rows_of(rows, 192, 8);
  std::vector<uint8_t> all(size_t(c->encoded_bytes(rows))), one(size_t(c->block_bytes()));
  c->encode(x.data(), rows, all.data());
  for (int64_t r = 0; r < rows; ++r) {
    c->encode(x.data() + r * 192, 1, one.data());
    ASSERT_TRUE(std::equal(one.begin(), one.end(), all.begin() + r * c->block_bytes())) << r;
  }
}

}  // namespace
}  // namespace aquakv
