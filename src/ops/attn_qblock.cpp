// Scalar references and dispatch of ops/attn_qblock.h (AVX-512 VNNI: attn_qblock_avx512.cpp,
// AVX2: attn_qblock_avx2.cpp). The references define the bits every level reproduces.
#include "aquakv/ops/attn_qblock.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aquakv/ops/qdot.h"
#include "aquakv/util/check.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

int64_t block_bytes(GgmlType type) { return type == GgmlType::Q8_0 ? 34 : 18; }

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// Code i (0..31) of a block's code bytes: q8_0 int8; q4_0 nibble - 8 (value i < 16 in the low
// nibble of byte i, value i >= 16 in the high nibble of byte i - 16).
int32_t code(GgmlType type, const uint8_t* qs, int i) {
  if (type == GgmlType::Q8_0) return int32_t(int8_t(qs[i]));
  return int32_t(i < 16 ? (qs[i] & 15) : (qs[i - 16] >> 4)) - 8;
}

}  // namespace

bool attn_qblock_supported(GgmlType type) { return type == GgmlType::Q8_0 || type == GgmlType::Q4_0; }

void attn_quantize_qblocks(const float* q, int64_t M, int64_t hd, AttnQBlock* out) {
  AQUAKV_CHECK(hd % 32 == 0, "query blocks need hd % 32 == 0");
  Q8Act tmp[8];
  for (int64_t r = 0; r < M; ++r)
    for (int64_t b0 = 0; b0 < hd / 32; b0 += 8) {
      const int64_t nb = std::min<int64_t>(8, hd / 32 - b0);
      quantize_q8(q + r * hd + 32 * b0, tmp, 32 * nb);
      for (int64_t b = 0; b < nb; ++b) {
        AttnQBlock& o = out[r * (hd / 32) + b0 + b];
        o.d = tmp[b].d;
        o.sum = 0;
        for (int i = 0; i < 32; ++i) o.sum += tmp[b].q[i];
        std::memcpy(o.q, tmp[b].q, 32);
      }
    }
}

void attn_scores_qblock_ref(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                            const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss) {
  const int64_t nb = hd / 32, bb = block_bytes(type);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < t; ++j) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = k + j * ks + b * bb;
        const AttnQBlock& qb = q[r * nb + b];
        int32_t isum = 0;
        for (int i = 0; i < 32; ++i) isum += code(type, blk + 2, i) * int32_t(qb.q[i]);
        acc = std::fma(float(isum), half_at(blk) * qb.d, acc);
      }
      s[r * ss + j] = acc;
    }
}

void attn_accum_qblock_ref(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                           const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  const int64_t nb = hd / 32, bb = block_bytes(type);
  for (int64_t j = 0; j < t; ++j)
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = v + j * vs + b * bb;
      const float d = half_at(blk);
      for (int i = 0; i < 32; ++i) {
        const float x = d * float(code(type, blk + 2, i));
        for (int64_t r = 0; r < M; ++r) a[r * hd + 32 * b + i] = std::fma(p[r * ps + j], x, a[r * hd + 32 * b + i]);
      }
    }
}

void attn_scores_qblock(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                        const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss) {
  AQUAKV_CHECK(attn_qblock_supported(type) && hd % 32 == 0);
  if (simd_at_least(SimdLevel::kAvx512)) return detail::attn_scores_qblock_avx512(type, q, M, hd, k, t, ks, s, ss);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::attn_scores_qblock_avx2(type, q, M, hd, k, t, ks, s, ss);
  attn_scores_qblock_ref(type, q, M, hd, k, t, ks, s, ss);
}

void attn_accum_qblock(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                       const uint8_t* v, int64_t vs, int64_t hd, float* a) {
  AQUAKV_CHECK(attn_qblock_supported(type) && hd % 32 == 0);
  if (simd_at_least(SimdLevel::kAvx512)) return detail::attn_accum_qblock_avx512(type, p, M, t, ps, v, vs, hd, a);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::attn_accum_qblock_avx2(type, p, M, t, ps, v, vs, hd, a);
  attn_accum_qblock_ref(type, p, M, t, ps, v, vs, hd, a);
}

}  // namespace aquakv
