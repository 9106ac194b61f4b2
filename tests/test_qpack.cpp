// Repacked weights (ops/qpack.h): packing is lossless, every SIMD level and every number of
// activation vectors gives the scalar reference's bits, the reference stays inside the 8-bit
// activation bound against float64, and matmul on a packed matrix keeps the thread-count and
// fused-product invariants whatever group a thread's range cuts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/ops/nn.h"
#include "aquakv/ops/qpack.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                           GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

bool is_k(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K; }
// A row length valid for t near c: K-quants need multiples of 256.
int64_t cols_for(GgmlType t, int64_t c) { return is_k(t) ? (c + 255) / 256 * 256 : c; }

void put_half(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> gauss(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// GGUF rows quantized from Gaussian values (some rows scaled up so blocks differ in scale); the
// K-quants: random codes and scale codes with small finite super-block scales.
std::vector<uint8_t> gguf_rows(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t rb = ggml_row_bytes(t, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb));
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = out.data() + r * rb;
    if (is_k(t)) {
      for (int64_t i = 0; i < rb; ++i) dst[i] = uint8_t(rng());
      const int64_t bb = t == GgmlType::Q4_K ? 144 : t == GgmlType::Q5_K ? 176 : 210;
      for (int64_t b = 0; b < cols / 256; ++b) {
        if (t == GgmlType::Q6_K) {
          put_half(dst + b * bb + 208, u(rng));
        } else {
          put_half(dst + b * bb, u(rng));
          put_half(dst + b * bb + 2, u(rng));
        }
      }
      continue;
    }
    auto x = gauss(cols, rng);
    for (auto& v : x) v *= float(1 + r % 5);
    EXPECT_TRUE(quantize_row_ref(t, x.data(), dst, cols));
  }
  return out;
}

// The packed copy of every full 16-row group.
std::vector<uint8_t> pack_all(GgmlType t, const std::vector<uint8_t>& rows, int64_t n_rows, int64_t cols) {
  const int64_t gb = qpack_group_bytes(t, cols), rb = ggml_row_bytes(t, cols);
  std::vector<uint8_t> p(static_cast<size_t>(n_rows / kPackRows * gb));
  for (int64_t g = 0; g < n_rows / kPackRows; ++g) {
    qpack_group(t, rows.data() + g * kPackRows * rb, rb, cols, p.data() + g * gb);
  }
  return p;
}

std::vector<Q8Act> quantized(const std::vector<float>& x, int64_t n, int64_t cols) {
  std::vector<Q8Act> q(static_cast<size_t>(n * cols / 32));
  for (int64_t i = 0; i < n; ++i) quantize_q8_ref(x.data() + i * cols, q.data() + i * cols / 32, cols);
  return q;
}

std::vector<SimdLevel> levels_here() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (cpu_simd_level() >= l) out.push_back(l);
  }
  return out;
}

TEST(Qpack, PackUnpackAndDequantizeAreExact) {
  std::mt19937 rng(11);
  for (GgmlType t : kTypes) {
    for (int64_t c : {32, 96, 576}) {
      const int64_t cols = cols_for(t, c);
      const auto rows = gguf_rows(t, 32, cols, rng);
      const int64_t rb = ggml_row_bytes(t, cols);
      const int64_t packed_rb = t == GgmlType::Q4_K ? rb / 144 * 148 : t == GgmlType::Q5_K ? rb / 176 * 180 : rb;
      EXPECT_EQ(qpack_group_bytes(t, cols), kPackRows * packed_rb);
      const auto packed = pack_all(t, rows, 32, cols);
      EXPECT_NE(std::memcmp(packed.data(), rows.data(), packed.size()), 0);  // a different layout
      std::vector<uint8_t> back(rows.size());
      std::vector<float> deq(static_cast<size_t>(kPackRows * cols)), ref(static_cast<size_t>(cols));
      for (int64_t g = 0; g < 2; ++g) {
        const uint8_t* grp = packed.data() + g * qpack_group_bytes(t, cols);
        qunpack_group(t, grp, cols, back.data() + g * kPackRows * rb, rb);
        qpack_dequant_group(t, grp, cols, deq.data(), cols);
        for (int64_t r = 0; r < kPackRows; ++r) {
          dequantize_row_ref(t, rows.data() + (g * kPackRows + r) * rb, ref.data(), cols);
          ASSERT_EQ(std::memcmp(ref.data(), deq.data() + r * cols, size_t(cols) * 4), 0)
              << ggml_type_name(t) << " cols " << cols << " row " << g * kPackRows + r;
        }
      }
      ASSERT_EQ(back, rows) << ggml_type_name(t) << " cols " << cols;
    }
  }
}

// Random bytes in every field, with finite f16 scales of any magnitude (subnormal to 65504) in
// place of each block's d (and m / dmin): code and scale patterns no quantizer would produce.
std::vector<uint8_t> wild_rows(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t rb = ggml_row_bytes(t, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * rb));
  for (auto& b : out) b = uint8_t(rng());
  const auto finite_half = [&](uint8_t* p) {
    uint16_t h = uint16_t(rng());
    if ((h & 0x7c00) == 0x7c00) h &= 0xbfff;  // inf / NaN exponent -> a finite one
    std::memcpy(p, &h, 2);
  };
  const int64_t bb = is_k(t) ? rb / (cols / 256) : rb / (cols / 32);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < rb / bb; ++b) {
      uint8_t* blk = out.data() + r * rb + b * bb;
      if (t == GgmlType::Q6_K) {
        finite_half(blk + 208);
        continue;
      }
      finite_half(blk);
      if (t != GgmlType::Q4_0 && t != GgmlType::Q5_0 && t != GgmlType::Q8_0) finite_half(blk + 2);
    }
  }
  return out;
}

// Dequantizing straight from the packed groups (what prefill's GEMM tiles are made of) gives,
// at every SIMD level and in the scalar reference, the bits of the path it replaced: unpack the
// group to GGUF rows, then decode each row (dequantize_row_ref, and dequantize_row at that level).
// Rows go to a strided tile (ld = cols + 16); the gaps between them stay untouched.
TEST(Qpack, DequantizeFromPackedEqualsUnpackThenDequantizeAtEveryLevel) {
  std::mt19937 rng(15);
  for (GgmlType t : kTypes) {
    for (int64_t c : {32, 96, 576}) {
      const int64_t cols = cols_for(t, c), rb = ggml_row_bytes(t, cols), gb = qpack_group_bytes(t, cols);
      const int64_t ld = cols + 16;
      for (int wild = 0; wild < 2; ++wild) {
        const auto rows = wild ? wild_rows(t, 32, cols, rng) : gguf_rows(t, 32, cols, rng);
        const auto packed = pack_all(t, rows, 32, cols);
        const std::string what = std::string(ggml_type_name(t)) + " cols " + std::to_string(cols) + (wild ? " wild" : "");
        std::vector<uint8_t> back(static_cast<size_t>(kPackRows * rb));
        std::vector<float> old(static_cast<size_t>(kPackRows * ld), -7.0f), got(old.size());
        const auto check = [&](const std::string& how) {
          ASSERT_EQ(std::memcmp(old.data(), got.data(), old.size() * 4), 0) << what << " " << how;
        };
        for (int64_t g = 0; g < 2; ++g) {
          const uint8_t* grp = packed.data() + g * gb;
          qunpack_group(t, grp, cols, back.data(), rb);
          for (int64_t r = 0; r < kPackRows; ++r) dequantize_row_ref(t, back.data() + r * rb, old.data() + r * ld, cols);
          std::fill(got.begin(), got.end(), -7.0f);
          qpack_dequant_group_ref(t, grp, cols, got.data(), ld);
          check("reference");
          for (SimdLevel lvl : levels_here()) {
            set_simd_level(lvl);
            std::fill(got.begin(), got.end(), -7.0f);
            qpack_dequant_group(t, grp, cols, got.data(), ld);
            check(simd_level_name(lvl));
            std::fill(got.begin(), got.end(), -7.0f);
            for (int64_t r = 0; r < kPackRows; ++r) dequantize_row(t, back.data() + r * rb, got.data() + r * ld, cols);
            check(std::string("row decoder ") + simd_level_name(lvl));
          }
          set_simd_level(cpu_simd_level());
        }
      }
    }
  }
}

// |ref - float64 dot of the dequantized row with x| <= sum_j |w_j| d/2 (the activation's int8
// rounding) + 1e-5 * sum_j |w_j x_j| (f32 sums), per row and activation.
TEST(Qpack, ReferenceIsWithinTheActivationBound) {
  std::mt19937 rng(12);
  for (GgmlType t : kTypes) {
    const int64_t cols = cols_for(t, 576), n = 3;
    const auto rows = gguf_rows(t, 32, cols, rng);
    const auto packed = pack_all(t, rows, 32, cols);
    const auto x = gauss(n * cols, rng);
    const auto xq = quantized(x, n, cols);
    std::vector<float> out(static_cast<size_t>(n * 32)), w(static_cast<size_t>(cols));
    qpack_dot_ref(t, packed.data(), cols, 0, 2, xq.data(), n, out.data(), 32);
    for (int64_t r = 0; r < 32; ++r) {
      dequantize_row_ref(t, rows.data() + r * ggml_row_bytes(t, cols), w.data(), cols);
      for (int64_t i = 0; i < n; ++i) {
        double exact = 0, mag = 0, bound = 0;
        for (int64_t c = 0; c < cols; ++c) {
          exact += double(w[size_t(c)]) * x[size_t(i * cols + c)];
          mag += std::fabs(double(w[size_t(c)]) * x[size_t(i * cols + c)]);
          bound += std::fabs(double(w[size_t(c)])) * xq[size_t((i * cols + c) / 32)].d / 2;
        }
        ASSERT_LE(std::fabs(out[size_t(i * 32 + r)] - exact), bound + 1e-5 * mag + 1e-6)
            << ggml_type_name(t) << " row " << r << " act " << i;
      }
    }
  }
}

// Every level, and every count of activation vectors (the AVX-512 kernel takes them 4 at a
// time, AVX2 2 at a time, with rests), returns the reference's bits; so a batched decode step
// gives each sequence exactly what it gets alone.
TEST(Qpack, LevelsAndBatchSizesAreBitIdenticalToTheReference) {
  std::mt19937 rng(13);
  for (GgmlType t : kTypes) {
    for (int64_t c : {32, 576}) {
      const int64_t cols = cols_for(t, c), n_rows = 48, nmax = 9;
      const auto rows = gguf_rows(t, n_rows, cols, rng);
      const auto packed = pack_all(t, rows, n_rows, cols);
      const auto x = gauss(nmax * cols, rng);
      const auto xq = quantized(x, nmax, cols);
      std::vector<float> ref(static_cast<size_t>(nmax * n_rows));
      qpack_dot_ref(t, packed.data(), cols, 0, 3, xq.data(), nmax, ref.data(), n_rows);
      for (int64_t i = 0; i < nmax; ++i) {  // one vector at a time, same bits
        std::vector<float> one(static_cast<size_t>(n_rows));
        qpack_dot_ref(t, packed.data(), cols, 0, 3, xq.data() + i * cols / 32, 1, one.data(), n_rows);
        ASSERT_EQ(std::memcmp(one.data(), ref.data() + i * n_rows, one.size() * 4), 0);
      }
      for (SimdLevel lvl : levels_here()) {
        set_simd_level(lvl);
        for (int64_t n = 1; n <= nmax; ++n) {
          std::vector<float> fast(static_cast<size_t>(n * n_rows), -1.0f);
          qpack_dot(t, packed.data(), cols, 1, 3, xq.data(), n, fast.data(), n_rows);  // groups 1, 2
          qpack_dot(t, packed.data(), cols, 0, 1, xq.data(), n, fast.data(), n_rows);  // group 0
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_EQ(std::memcmp(fast.data() + i * n_rows, ref.data() + i * n_rows, size_t(n_rows) * 4), 0)
                << ggml_type_name(t) << " cols " << cols << " " << simd_level_name(lvl) << " n " << n << " act " << i;
          }
        }
      }
      set_simd_level(cpu_simd_level());
    }
  }
}

// A packed matrix in matmul: same bits at 1 and 2 threads, fused products equal separate ones
// (ranges that cut a group: 40 + 24 rows), the gemm path equal to the unpacked matrix's gemm
// path (packed groups dequantize to the same floats), and the dot path within the bound of the
// float64 reference.
TEST(Qpack, MatmulOnPackedMatrices) {
  std::mt19937 rng(14);
  for (GgmlType t : kTypes) {
    const int64_t cols = cols_for(t, 96);
    for (int64_t n_rows : {40, 24, 300}) {
      const auto rows = gguf_rows(t, n_rows, cols, rng);
      const auto packed = pack_all(t, rows, n_rows, cols);
      QMatrix plain{t, n_rows, cols, ggml_row_bytes(t, cols), rows.data()};
      QMatrix w = plain;
      w.packed = packed.data();
      for (int64_t n : {1, 3, 6}) {
        const auto x = gauss(n * cols, rng);
        std::vector<float> ref(static_cast<size_t>(n * n_rows)), y1(ref.size()), y2(ref.size()), g0(ref.size());
        matmul_ref(plain, x.data(), n, ref.data());
        set_num_threads(1);
        matmul(w, x.data(), n, y1.data(), MatmulPath::kDot);
        set_num_threads(2);
        matmul(w, x.data(), n, y2.data(), MatmulPath::kDot);
        ASSERT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << ggml_type_name(t) << " rows " << n_rows;
        const auto xq = quantized(x, n, cols);
        std::vector<float> wd(static_cast<size_t>(cols));
        for (int64_t r = 0; r < n_rows; ++r) {
          dequantize_row_ref(t, plain.row(r), wd.data(), cols);
          for (int64_t i = 0; i < n; ++i) {
            double mag = 0, bound = 0;
            for (int64_t c = 0; c < cols; ++c) {
              mag += std::fabs(double(wd[size_t(c)]) * x[size_t(i * cols + c)]);
              bound += std::fabs(double(wd[size_t(c)])) * xq[size_t((i * cols + c) / 32)].d / 2;
            }
            ASSERT_LE(std::fabs(y2[size_t(i * n_rows + r)] - ref[size_t(i * n_rows + r)]), bound + 1e-5 * mag + 1e-6);
          }
        }
        matmul(plain, x.data(), n, g0.data(), MatmulPath::kGemm);
        matmul(w, x.data(), n, y1.data(), MatmulPath::kGemm);
        ASSERT_EQ(std::memcmp(g0.data(), y1.data(), y1.size() * 4), 0) << ggml_type_name(t) << " gemm rows " << n_rows;
      }
    }
    // Two matrices in one index space: the second's groups start at row 40 of the space, so the
    // threads' ranges cut groups; the results must equal separate products.
    const auto ra = gguf_rows(t, 40, cols, rng), rb = gguf_rows(t, 24, cols, rng);
    const auto pa = pack_all(t, ra, 40, cols), pb = pack_all(t, rb, 24, cols);
    QMatrix a{t, 40, cols, ggml_row_bytes(t, cols), ra.data()}, b{t, 24, cols, ggml_row_bytes(t, cols), rb.data()};
    a.packed = pa.data();
    b.packed = pb.data();
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      const auto x = gauss(2 * cols, rng);
      std::vector<float> ya(80), yb(48), fa(80), fb(48);
      matmul(a, x.data(), 2, ya.data(), MatmulPath::kDot);
      matmul(b, x.data(), 2, yb.data(), MatmulPath::kDot);
      const QMatrix* ws[2] = {&a, &b};
      float* ys[2] = {fa.data(), fb.data()};
      matmul_many(ws, ys, 2, x.data(), 2, MatmulPath::kDot);
      ASSERT_EQ(ya, fa);
      ASSERT_EQ(yb, fb);
    }
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace aquakv
