// Attention kernels on llama.cpp's q8_0 / q4_0 cache blocks, for few query rows (decode). Owns: the
// query quantized to int8 blocks, key scores as integer dot products on the blocks, and the
// weighted sum of values read from the blocks; each with a scalar reference. Not: tiles, masks
// and the online softmax (kv/attend.h, ops/attn_tile.h), the block layouts (ops/ggml_types.h).
//
// Keys. A head slice of hd channels is hd/32 blocks b, each a scale d_b (fp16) and 32 integer
// codes c (q8_0: int8; q4_0: nibble n, c = n - 8). The query row (scale folded in, after RoPE in
// the same basis as the stored keys) is quantized once per step, per block: e_b = max|q|/127,
// z = round(q / e_b) (ops/qdot.h's Q8Act rounding). Then
//     score = sum_b (d_b e_b) * I_b,   I_b = sum_{i<32} c_i z_i   (an exact integer),
// accumulated as acc = fma(float(I_b), d_b*e_b, acc) in block order, at every SIMD level, so the
// kernels give the reference's bits. Error against the f32 query q and the decoded keys k:
// |score - q.k| <= sum_b (e_b / 2) sum_{i in b} |k_i| (+ f32 rounding), since |z e - q| <= e/2.
//
// Values. a[r][c] += p[r][j] * v_j[c] with v_j[c] = d_b * c_i rounded to f32 and one fma per term
// in row order j (bit-identical across levels); no f32 copy of the tile is made.
//
// SIMD: AVX-512 VNNI scores sixteen key rows at a time per block with vpdpbusd (u8 x s8: q8_0
// codes offset to c + 128, q4_0 nibbles as they are; the offset times the query block's code sum
// is subtracted), reduces the sixteen rows' partial sums to one register by a permute tree and
// applies the per-row scales on sixteen lanes; AVX2 uses vpmaddubsw (signs moved onto the query
// for q8_0, so products stay within int16) one row at a time.
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"

namespace aquakv {

// One query block: scale e, the 32 codes z and their sum.
struct AttnQBlock {
  float d;
  int32_t sum;
  int8_t q[32];
};

// True for the block types these kernels take (Q8_0, Q4_0).
bool attn_qblock_supported(GgmlType type);

// M rows of hd floats (hd % 32 == 0) -> M * hd/32 blocks (row r's at r * hd/32).
void attn_quantize_qblocks(const float* q, int64_t M, int64_t hd, AttnQBlock* out);

// s[r*ss + j] = score of query row r (blocks q + r*hd/32) against key row j, whose head slice of
// hd/32 blocks starts at k + j*ks bytes.
void attn_scores_qblock(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                        const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss);
void attn_scores_qblock_ref(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                            const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss);

// a[r*hd + c] += sum_j p[r*ps + j] * v_j[c], value row j's head slice at v + j*vs bytes.
void attn_accum_qblock(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                       const uint8_t* v, int64_t vs, int64_t hd, float* a);
void attn_accum_qblock_ref(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                           const uint8_t* v, int64_t vs, int64_t hd, float* a);

namespace detail {
void attn_scores_qblock_avx2(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                             const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss);
void attn_accum_qblock_avx2(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                            const uint8_t* v, int64_t vs, int64_t hd, float* a);
void attn_scores_qblock_avx512(GgmlType type, const AttnQBlock* q, int64_t M, int64_t hd,
                               const uint8_t* k, int64_t t, int64_t ks, float* s, int64_t ss);
void attn_accum_qblock_avx512(GgmlType type, const float* p, int64_t M, int64_t t, int64_t ps,
                              const uint8_t* v, int64_t vs, int64_t hd, float* a);
}  // namespace detail

}  // namespace aquakv
