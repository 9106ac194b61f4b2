// Attention kernels on q8_0 / q4_0 blocks (ops/attn_qblock.h): every SIMD level bit-identical to
// the scalar reference, and the reference against float64 sums over keys and values decoded by
// the ggml dequantizer (independent of the kernels), within the bound the query's rounding gives.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "aquakv/ops/attn_qblock.h"
#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/cpu.h"
#include "random_rows.h"

namespace aquakv {
namespace {

using testing::randn;

// t rows of H heads x hd channels coded as `type` (row stride: H*hd values' bytes), and the
// decoded floats.
struct Rows {
  std::vector<uint8_t> codes;
  std::vector<float> dec;
  int64_t stride;
};
Rows make_rows(GgmlType type, int64_t t, int64_t width, uint32_t seed) {
  Rows r;
  const auto x = randn(size_t(t * width), seed, 2.0f);
  r.stride = ggml_row_bytes(type, width);
  r.codes.resize(size_t(t * r.stride));
  r.dec.resize(x.size());
  for (int64_t j = 0; j < t; ++j) {
    EXPECT_TRUE(quantize_row_ref(type, x.data() + j * width, r.codes.data() + j * r.stride, width));
    dequantize_row_ref(type, r.codes.data() + j * r.stride, r.dec.data() + j * width, width);
  }
  return r;
}

TEST(AttnQBlock, EveryLevelMatchesTheReferenceBitForBit) {
  const SimdLevel saved = simd_level();
  for (const GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0})
    for (const int64_t hd : {32, 64, 96, 128})
      for (const int64_t t : {1, 15, 16, 37, 128})
        for (const int64_t M : {1, 3, 5, 9}) {
          const int64_t H = 3, head = 1;  // the middle head of three: strides and offsets as in a cache
          const Rows k = make_rows(type, t, H * hd, 7), v = make_rows(type, t, H * hd, 8);
          const int64_t off = head * ggml_row_bytes(type, hd);
          std::vector<AttnQBlock> qb(size_t(M * hd / 32));
          attn_quantize_qblocks(randn(size_t(M * hd), 9).data(), M, hd, qb.data());
          const auto p = randn(size_t(M * t), 10);
          std::vector<float> sref(size_t(M * t)), aref(size_t(M * hd), 0.5f);
          attn_scores_qblock_ref(type, qb.data(), M, hd, k.codes.data() + off, t, k.stride, sref.data(), t);
          attn_accum_qblock_ref(type, p.data(), M, t, t, v.codes.data() + off, v.stride, hd, aref.data());
          for (int lv = 0; lv <= int(cpu_simd_level()); ++lv) {
            set_simd_level(SimdLevel(lv));
            std::vector<float> s(sref.size()), a(aref.size(), 0.5f);
            attn_scores_qblock(type, qb.data(), M, hd, k.codes.data() + off, t, k.stride, s.data(), t);
            attn_accum_qblock(type, p.data(), M, t, t, v.codes.data() + off, v.stride, hd, a.data());
            for (size_t i = 0; i < s.size(); ++i)
              ASSERT_EQ(s[i], sref[i]) << simd_level_name(SimdLevel(lv)) << " type " << int(type) << " hd " << hd
                                       << " t " << t << " M " << M << " i " << i;
            for (size_t i = 0; i < a.size(); ++i)
              ASSERT_EQ(a[i], aref[i]) << simd_level_name(SimdLevel(lv)) << " type " << int(type) << " hd " << hd
                                       << " t " << t << " M " << M << " i " << i;
          }
          set_simd_level(saved);
        }
  set_simd_level(saved);
}

// Reference vs float64 on the decoded rows. Scores: |s - q.k| <= sum_b (e_b/2) sum_{i in b} |k_i|
// (the query codes' rounding, |z e - q| <= e/2) + 1e-6 sum |q k| (f32 products and sums); the
// test also requires the query-rounding part to be used (max observed error > 1% of the bound's
// first term somewhere), so a kernel that ignored the query rounding would not pass by luck.
// Values: |a - sum p v| <= 1e-6 sum |p v| (f32 fma chain of t terms, t <= 128).
TEST(AttnQBlock, ReferenceWithinTheQueryRoundingBound) {
  for (const GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0})
    for (const int64_t hd : {32, 64, 128}) {
      const int64_t t = 128, M = 4;
      const Rows k = make_rows(type, t, hd, 21), v = make_rows(type, t, hd, 22);
      const auto q = randn(size_t(M * hd), 23), p = randn(size_t(M * t), 24);
      std::vector<AttnQBlock> qb(size_t(M * hd / 32));
      attn_quantize_qblocks(q.data(), M, hd, qb.data());
      std::vector<float> s(size_t(M * t)), a(size_t(M * hd), 0.0f);
      attn_scores_qblock_ref(type, qb.data(), M, hd, k.codes.data(), t, k.stride, s.data(), t);
      attn_accum_qblock_ref(type, p.data(), M, t, t, v.codes.data(), v.stride, hd, a.data());
      double used = 0;
      for (int64_t r = 0; r < M; ++r) {
        for (int64_t j = 0; j < t; ++j) {
          double exact = 0, mag = 0, bound = 0;
          for (int64_t c = 0; c < hd; ++c) {
            const double kc = k.dec[size_t(j * hd + c)];
            exact += double(q[size_t(r * hd + c)]) * kc;
            mag += std::fabs(double(q[size_t(r * hd + c)]) * kc);
            bound += 0.5 * double(qb[size_t(r * hd / 32 + c / 32)].d) * std::fabs(kc);
          }
          const double err = std::fabs(double(s[size_t(r * t + j)]) - exact);
          ASSERT_LE(err, bound + 1e-6 * mag) << "type " << int(type) << " hd " << hd << " r " << r << " j " << j;
          used = std::max(used, err / bound);
        }
        for (int64_t c = 0; c < hd; ++c) {
          double exact = 0, mag = 0;
          for (int64_t j = 0; j < t; ++j) {
            exact += double(p[size_t(r * t + j)]) * v.dec[size_t(j * hd + c)];
            mag += std::fabs(double(p[size_t(r * t + j)]) * v.dec[size_t(j * hd + c)]);
          }
          ASSERT_LE(std::fabs(double(a[size_t(r * hd + c)]) - exact), 1e-6 * mag) << "type " << int(type) << " c " << c;
        }
      }
      EXPECT_GT(used, 0.01) << "type " << int(type) << " hd " << hd;
      std::printf("type %d hd %ld: largest score error / query-rounding bound = %.3f\n", int(type), long(hd), used);
    }
}

}  // namespace
}  // namespace aquakv
