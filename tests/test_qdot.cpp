// Quantized dot products and matmul (ops/qdot.h, ops/matmul.h): AVX2 == scalar reference, the
// 8-bit activation error stays inside its derived bound, every path against float64 sums of the
// dequantized weights, and threaded == single-threaded.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/ops/nn.h"
#include "aquakv/ops/qdot.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

std::vector<float> randn(int64_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

void put_half(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// `rows` rows of `cols` values in `type`: quantized from Gaussian values for the 32-blocks,
// converted for F16/BF16/F32, random codes with small finite scales for the K-quants.
std::vector<uint8_t> make_rows(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t rb = ggml_row_bytes(type, cols);
  std::vector<uint8_t> data(static_cast<size_t>(rows * rb));
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = data.data() + r * rb;
    const auto x = randn(cols, rng);
    if (quantize_row_ref(type, x.data(), dst, cols)) continue;
    if (type == GgmlType::F32) {
      std::memcpy(dst, x.data(), size_t(cols) * 4);
    } else if (type == GgmlType::F16 || type == GgmlType::BF16) {
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = type == GgmlType::F16 ? fp32_to_fp16(x[size_t(i)]) : fp32_to_bf16(x[size_t(i)]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    } else {
      for (int64_t i = 0; i < rb; ++i) dst[i] = uint8_t(rng());
      std::uniform_real_distribution<float> u(0.001f, 0.05f);
      const int64_t bb = type == GgmlType::Q4_K ? 144 : type == GgmlType::Q5_K ? 176 : 210;
      for (int64_t b = 0; b < cols / 256; ++b) {
        uint8_t* blk = dst + b * bb;
        if (type == GgmlType::Q6_K) {
          put_half(blk + 208, u(rng));
        } else {
          put_half(blk, u(rng));
          put_half(blk + 2, u(rng));
        }
      }
    }
  }
  return data;
}

QMatrix view(GgmlType type, int64_t rows, int64_t cols, const std::vector<uint8_t>& d) {
  return QMatrix{type, rows, cols, ggml_row_bytes(type, cols), d.data()};
}

const GgmlType kIntTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0};
const GgmlType kAllTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                              GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                              GgmlType::F16,  GgmlType::BF16, GgmlType::F32};

bool have_avx2() { return cpu_simd_level() >= SimdLevel::kAvx2; }

// The SIMD levels above scalar that this CPU can run (the others are compiled, not run).
std::vector<SimdLevel> simd_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : {SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (cpu_simd_level() >= l) out.push_back(l);
  }
  return out;
}

TEST(Qdot, QuantizeQ8SimdIsBitIdentical) {
  if (!have_avx2()) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(1);
  for (int64_t n : {32, 64, 576, 1536}) {
    auto x = randn(n, rng, 3.0f);
    std::fill(x.begin(), x.begin() + 32, 0.0f);  // an all-zero block: d = 0
    x[40] = 0.5f * 127.0f / 127.0f;              // exact halves exercise the rounding
    std::vector<Q8Act> a(size_t(n / 32)), b(size_t(n / 32));
    quantize_q8_ref(x.data(), a.data(), n);
    set_simd_level(SimdLevel::kAvx2);
    quantize_q8(x.data(), b.data(), n);
    ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(Q8Act)), 0) << n;
  }
}

// sum_j |w_j| * d_b / 2 over blocks: rounding x_j to d_b*q_j moves it by at most d_b/2.
double q8_bound(const std::vector<float>& w, const std::vector<Q8Act>& xq) {
  double b = 0;
  for (size_t j = 0; j < w.size(); ++j) b += std::fabs(w[j]) * xq[j / 32].d / 2;
  return b;
}

TEST(Qdot, IntegerPathSimdScalarAndActivationBound) {
  std::mt19937 rng(2);
  for (GgmlType t : kIntTypes) {
    for (int64_t n : {32, 96, 576, 1536}) {
      const auto row = make_rows(t, 1, n, rng);
      const auto x = randn(n, rng);
      std::vector<Q8Act> xq(size_t(n / 32));
      quantize_q8_ref(x.data(), xq.data(), n);
      std::vector<float> w(static_cast<size_t>(n));
      dequantize_row_ref(t, row.data(), w.data(), n);
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        exact += double(w[size_t(i)]) * x[size_t(i)];
        mag += std::fabs(double(w[size_t(i)]) * x[size_t(i)]);
      }
      const float ref = qdot_q8_ref(t, row.data(), xq.data(), n);
      // f32 accumulation adds at most ~n * 2^-24 * magnitude; 1e-5 * mag covers it.
      EXPECT_LE(std::fabs(ref - exact), q8_bound(w, xq) + 1e-5 * mag) << ggml_type_name(t) << " " << n;
      for (SimdLevel lvl : simd_levels()) {
        set_simd_level(lvl);
        const float fast = qdot_q8(t, row.data(), xq.data(), n);
        EXPECT_LE(std::fabs(fast - ref), 1e-5 * mag + 1e-6)
            << ggml_type_name(t) << " " << n << " " << simd_level_name(lvl);
      }
      set_simd_level(cpu_simd_level());
    }
  }
}

// The multi-row dot (decode of several sequences) gives each activation exactly the single-row
// dot's float, for the scalar reference and for AVX2, for every group size of its AVX2 version
// (groups of 4, then a rest of 1..3).
TEST(Qdot, RowsDotIsBitIdenticalToSingleDots) {
  std::mt19937 rng(5);
  for (GgmlType t : kIntTypes) {
    for (int64_t n : {32, 96, 576}) {
      const auto row = make_rows(t, 1, n, rng);
      for (int64_t n_act : {1, 2, 3, 4, 5, 7, 8, 9}) {
        const auto x = randn(n_act * n, rng);
        std::vector<Q8Act> xq(size_t(n_act * n / 32));
        quantize_q8_ref(x.data(), xq.data(), n_act * n);
        std::vector<float> multi(static_cast<size_t>(n_act));
        std::vector<SimdLevel> levels = simd_levels();
        levels.insert(levels.begin(), SimdLevel::kScalar);
        for (SimdLevel lvl : levels) {
          set_simd_level(lvl);
          qdot_q8_rows(t, row.data(), xq.data(), n, n_act, multi.data());
          for (int64_t a = 0; a < n_act; ++a) {
            const float single = qdot_q8(t, row.data(), xq.data() + a * n / 32, n);
            ASSERT_EQ(std::memcmp(&single, &multi[size_t(a)], 4), 0)
                << ggml_type_name(t) << " n " << n << " n_act " << n_act << " a " << a << " "
                << simd_level_name(lvl) << ": " << single << " vs " << multi[size_t(a)];
          }
        }
      }
    }
  }
  set_simd_level(cpu_simd_level());
}

// The multi-row dot (decode of one sequence: several weight rows, one activation vector) gives
// each row exactly the single-row dot's float at every level, for row counts that exercise its
// groups of 4 and the rest; blocks counts odd and even (the AVX-512 kernel takes two at a time).
TEST(Qdot, MultirowDotIsBitIdenticalToSingleDots) {
  std::mt19937 rng(6);
  std::vector<SimdLevel> levels = simd_levels();
  levels.insert(levels.begin(), SimdLevel::kScalar);
  for (GgmlType t : kIntTypes) {
    for (int64_t n : {32, 96, 576}) {
      for (int64_t n_rows : {1, 3, 4, 5, 8, 11}) {
        const auto rows = make_rows(t, n_rows, n, rng);
        const int64_t rb = ggml_row_bytes(t, n);
        const auto x = randn(n, rng);
        std::vector<Q8Act> xq(size_t(n / 32));
        quantize_q8_ref(x.data(), xq.data(), n);
        std::vector<float> multi(static_cast<size_t>(n_rows));
        for (SimdLevel lvl : levels) {
          set_simd_level(lvl);
          qdot_q8_multirow(t, rows.data(), rb, n_rows, xq.data(), n, multi.data());
          for (int64_t r = 0; r < n_rows; ++r) {
            const float single = qdot_q8(t, rows.data() + r * rb, xq.data(), n);
            ASSERT_EQ(std::memcmp(&single, &multi[size_t(r)], 4), 0)
                << ggml_type_name(t) << " n " << n << " rows " << n_rows << " r " << r << " "
                << simd_level_name(lvl) << ": " << single << " vs " << multi[size_t(r)];
          }
        }
      }
    }
  }
  set_simd_level(cpu_simd_level());
}

TEST(Qdot, FloatPathMatchesFloat64) {
  std::mt19937 rng(3);
  for (GgmlType t : kAllTypes) {
    const int64_t n = 512;
    const auto row = make_rows(t, 1, n, rng);
    const auto x = randn(n, rng);
    std::vector<float> w(static_cast<size_t>(n));
    dequantize_row_ref(t, row.data(), w.data(), n);
    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(w[size_t(i)]) * x[size_t(i)]);
    const float ref = qdot_f32_ref(t, row.data(), x.data(), n);
    for (SimdLevel lvl : {SimdLevel::kScalar, SimdLevel::kAvx2}) {
      set_simd_level(lvl);
      EXPECT_LE(std::fabs(qdot_f32(t, row.data(), x.data(), n) - ref), 1e-5 * mag + 1e-6)
          << ggml_type_name(t) << " " << simd_level_name(simd_level());
    }
  }
  set_simd_level(cpu_simd_level());
}

// Both matmul paths against float64 sums, for every type; odd row counts and token counts;
// 2 threads give bit-identical results to 1 thread.
TEST(Matmul, PathsMatchReferenceAndThreadCountDoesNotMatter) {
  std::mt19937 rng(4);
  for (GgmlType t : kAllTypes) {
    const int64_t cols = 512;
    for (int64_t rows : {1, 37, 300}) {
      const auto data = make_rows(t, rows, cols, rng);
      const QMatrix w = view(t, rows, cols, data);
      for (int64_t n : {1, 3, 17}) {
        const auto x = randn(n * cols, rng);
        std::vector<float> ref(size_t(n * rows));
        matmul_ref(w, x.data(), n, ref.data());
        // Per-output bounds from the dequantized weights.
        std::vector<float> wd(size_t(rows * cols));
        for (int64_t r = 0; r < rows; ++r) dequantize_row_ref(t, w.row(r), wd.data() + r * cols, cols);
        std::vector<Q8Act> xq(size_t(n * cols / 32));
        for (int64_t i = 0; i < n; ++i) quantize_q8_ref(x.data() + i * cols, xq.data() + i * cols / 32, cols);
        for (MatmulPath path : {MatmulPath::kDot, MatmulPath::kGemm}) {
          std::vector<float> y1(ref.size()), y2(ref.size());
          set_num_threads(1);
          matmul(w, x.data(), n, y1.data(), path);
          set_num_threads(2);
          matmul(w, x.data(), n, y2.data(), path);
          ASSERT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << ggml_type_name(t) << " rows " << rows << " n " << n;
          const bool q8 = path == MatmulPath::kDot && qdot_uses_q8(t);
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t r = 0; r < rows; ++r) {
              double mag = 0, bound = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double wv = wd[size_t(r * cols + c)];
                mag += std::fabs(wv * x[size_t(i * cols + c)]);
                if (q8) bound += std::fabs(wv) * xq[size_t((i * cols + c) / 32)].d / 2;
              }
              const double err = std::fabs(y2[size_t(i * rows + r)] - ref[size_t(i * rows + r)]);
              ASSERT_LE(err, bound + 1e-5 * mag + 1e-6)
                  << ggml_type_name(t) << " path " << int(path) << " rows " << rows << " n " << n << " r " << r;
            }
          }
        }
      }
    }
  }
  set_num_threads(0);
}

// The fused decode products give the same bits as the separate ones they replace: matmul_many
// as k matmul calls, matmul_swiglu as two matmuls and swiglu; at 1 and 2 threads, both paths.
TEST(Matmul, FusedProductsAreBitIdenticalToSeparateOnes) {
  std::mt19937 rng(7);
  const int64_t cols = 96;
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K}) {
    const int64_t c = t == GgmlType::Q4_K ? 256 : cols;
    const auto da = make_rows(t, 40, c, rng), db = make_rows(t, 24, c, rng), dc = make_rows(t, 24, c, rng);
    const QMatrix a = view(t, 40, c, da), b = view(t, 24, c, db), u = view(t, 24, c, dc);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      for (int64_t n : {1, 2, 5}) {
        const auto x = randn(n * c, rng);
        for (MatmulPath path : {MatmulPath::kDot, MatmulPath::kGemm}) {
          std::vector<float> ya(size_t(n * 40)), yb(size_t(n * 24)), fa(ya.size()), fb(yb.size());
          matmul(a, x.data(), n, ya.data(), path);
          matmul(b, x.data(), n, yb.data(), path);
          const QMatrix* ws[2] = {&a, &b};
          float* ys[2] = {fa.data(), fb.data()};
          matmul_many(ws, ys, 2, x.data(), n, path);
          ASSERT_EQ(std::memcmp(ya.data(), fa.data(), ya.size() * 4), 0) << ggml_type_name(t) << " n " << n;
          ASSERT_EQ(std::memcmp(yb.data(), fb.data(), yb.size() * 4), 0) << ggml_type_name(t) << " n " << n;
          std::vector<float> yu(yb.size()), h(yb.size()), us(yb.size());
          matmul(u, x.data(), n, yu.data(), path);
          swiglu(yb.data(), yu.data(), yb.data(), int64_t(yb.size()));
          matmul_swiglu(b, u, x.data(), n, h.data(), us.data(), path);
          ASSERT_EQ(std::memcmp(yb.data(), h.data(), h.size() * 4), 0) << ggml_type_name(t) << " n " << n;
        }
      }
    }
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace aquakv
