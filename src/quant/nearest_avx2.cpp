// AVX2 block scan for nearest-point search. Scores are accumulated with separate multiply and
// add (fp-contract off: no FMA) in the same order as the scalar reference, so every score is
// bit-identical and the selected index is the same.
#if defined(__clang__)
#pragma clang fp contract(off)
#else
#pragma GCC optimize("fp-contract=off")
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "nearest_internal.h"

namespace aquakv::detail {

void scan_blocks_avx2(const float* blocks, int64_t nblocks, int d, const float* u2,
                      float& best_score, int32_t& best_id) {
  const int64_t stride = nearest_block_floats(d);
  __m256 uj[16];
  for (int j = 0; j < d; ++j) uj[j] = _mm256_set1_ps(u2[j]);
  __m256 best = _mm256_set1_ps(best_score);
  __m256i bid = _mm256_set1_epi32(best_id);
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* blk = blocks + b * stride;
    __m256 s = _mm256_loadu_ps(blk + d * 8);
    for (int j = 0; j < d; ++j) s = _mm256_add_ps(s, _mm256_mul_ps(uj[j], _mm256_loadu_ps(blk + j * 8)));
    const __m256i id = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + (d + 1) * 8));
    const __m256 gt = _mm256_cmp_ps(s, best, _CMP_GT_OQ);
    const __m256 eq = _mm256_cmp_ps(s, best, _CMP_EQ_OQ);
    const __m256 lt = _mm256_castsi256_ps(_mm256_cmpgt_epi32(bid, id));
    const __m256 take = _mm256_or_ps(gt, _mm256_and_ps(eq, lt));
    best = _mm256_blendv_ps(best, s, take);
    bid = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bid), _mm256_castsi256_ps(id), take));
  }
  alignas(32) float bs[8];
  alignas(32) int32_t bi[8];
  _mm256_store_ps(bs, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bi), bid);
  for (int l = 0; l < 8; ++l) {
    if (bs[l] > best_score || (bs[l] == best_score && bi[l] < best_id)) {
      best_score = bs[l];
      best_id = bi[l];
    }
  }
}

int64_t search_lanes_avx2(const float* pts, const float* negnorm, int64_t n, int d, const float* u,
                          int64_t m, uint16_t* idx) {
  const int64_t m8 = m / 8 * 8;
  alignas(32) float ut[16][8];
  alignas(32) int32_t out[8];
  for (int64_t q = 0; q < m8; q += 8) {
    for (int l = 0; l < 8; ++l) {
      for (int j = 0; j < d; ++j) ut[j][l] = 2.0f * u[(q + l) * d + j];
    }
    __m256 uj[16];
    for (int j = 0; j < d; ++j) uj[j] = _mm256_load_ps(ut[j]);
    __m256 best = _mm256_set1_ps(-__builtin_inff());
    __m256i bid = _mm256_setzero_si256();
    __m256i cur = _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi32(1);
    for (int64_t i = 0; i < n; ++i) {
      const float* p = pts + i * d;
      __m256 s = _mm256_broadcast_ss(negnorm + i);
      for (int j = 0; j < d; ++j) s = _mm256_add_ps(s, _mm256_mul_ps(uj[j], _mm256_broadcast_ss(p + j)));
      const __m256 gt = _mm256_cmp_ps(s, best, _CMP_GT_OQ);
      best = _mm256_blendv_ps(best, s, gt);
      bid = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bid), _mm256_castsi256_ps(cur), gt));
      cur = _mm256_add_epi32(cur, one);
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(out), bid);
    for (int l = 0; l < 8; ++l) idx[q + l] = uint16_t(out[l]);
  }
  return m8;
}

void scan_ids_avx2(const float* pts, const float* negnorm, int d, const uint16_t* ids, int64_t count,
                   const float* u2, float& best_score, int32_t& best_id) {
  __m256 uj[16];
  for (int j = 0; j < d; ++j) uj[j] = _mm256_set1_ps(u2[j]);
  __m256 best = _mm256_set1_ps(best_score);
  __m256i bid = _mm256_set1_epi32(best_id);
  for (int64_t q = 0; q < count; q += 8) {
    const __m256i id = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ids + q)));
    const __m256i off = _mm256_mullo_epi32(id, _mm256_set1_epi32(d));
    __m256 s = _mm256_i32gather_ps(negnorm, id, 4);
    for (int j = 0; j < d; ++j) s = _mm256_add_ps(s, _mm256_mul_ps(uj[j], _mm256_i32gather_ps(pts + j, off, 4)));
    const __m256 gt = _mm256_cmp_ps(s, best, _CMP_GT_OQ);
    const __m256 eq = _mm256_cmp_ps(s, best, _CMP_EQ_OQ);
    const __m256 lt = _mm256_castsi256_ps(_mm256_cmpgt_epi32(bid, id));
    const __m256 take = _mm256_or_ps(gt, _mm256_and_ps(eq, lt));
    best = _mm256_blendv_ps(best, s, take);
    bid = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bid), _mm256_castsi256_ps(id), take));
  }
  alignas(32) float bs[8];
  alignas(32) int32_t bi[8];
  _mm256_store_ps(bs, best);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bi), bid);
  for (int l = 0; l < 8; ++l) {
    if (bs[l] > best_score || (bs[l] == best_score && bi[l] < best_id)) {
      best_score = bs[l];
      best_id = bi[l];
    }
  }
}

}  // namespace aquakv::detail
