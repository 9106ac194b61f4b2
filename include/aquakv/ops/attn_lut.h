// Key scores by per-query lookup tables over a 2-D grid of 16 points (HIGGS 2x16 codes), for few
// query rows (decode). Owns: the tables (built once per query row and step, quantized to bytes)
// and the score kernel that sums table entries picked by the stored 4-bit codes, with a scalar
// reference. Not: the grid or the code layout's origin (quant/higgs.h), tiles, masks and the
// online softmax (kv/attend.h, ops/attn_tile.h).
//
// Math. A key row's slice is P pairs; pair p stores a 4-bit code c_p (pair 2b in the low nibble
// of byte b, pair 2b+1 in the high one) naming grid point g[c_p] in R^2, and the row has one scale
// f (its fp16 group RMS times `mult`). With the query q in the same basis (P pairs),
//     score = f * sum_p (q_{2p} g[c_p].x + q_{2p+1} g[c_p].y) = f * sum_p L[p][c_p],
// so 16 numbers per pair, L[p][k], computed once per query row and step, replace every multiply
// of the key side. The tables are quantized to bytes: b_p = min_k L[p][k], one step
// delta = max_p (max_k L[p][k] - b_p) / 255 per query row, T[p][k] = round((L[p][k] - b_p) / delta)
// in 0..255, bias B = sum_p b_p. The kernel sums U = sum_p T[p][c_p] exactly in integers
// (U <= 255 P < 2^16 for P <= 256) and returns
//     s = fma(delta, float(U), B) * f.
// Error bound against the exact score f * sum_p L[p][c_p]: each entry is off by at most delta/2,
// so |s - exact| <= f * (P delta / 2) + f * 3 * 2^-24 * (delta U + |B|) (the last term: the f32
// roundings of the final formula and of B). In units of the score's spread this is small: delta is
// 1/255 of the widest pair's range, and the P roundings are independent, so the typical error is
// f * delta * sqrt(P / 12).
//
// SIMD (AVX2): sixteen key rows at a time. Their code bytes are transposed so that a 128-bit lane
// holds one code byte of the sixteen rows; vpshufb then looks up sixteen rows' entries of one
// pair at once (the table of that pair is the lane's 16 bytes), and the bytes are summed into
// 16-bit lanes. The transposed codes serve every query row of the step. Every level gives the
// reference's bits (integer sums, then the same three f32 operations).
#pragma once

#include <cstdint>

namespace aquakv {

// Bytes of one query row's tables: P pairs x 16 entries.
constexpr int64_t attn_lut_row_bytes(int64_t P) { return P * 16; }

// Whether the kernels take P pairs per key slice: P % 4 == 0 and 4 <= P <= 256.
bool attn_lut_supported(int64_t P);

// Tables of M query rows (row r's 2P values at q + r*2P) over the grid `points` (16 points, x
// then y) -> tab (M * attn_lut_row_bytes(P) bytes, row r's at r * attn_lut_row_bytes(P)), delta
// (M), bias (M). The tables are stored in the kernels' order: for each group of four pairs
// 4k..4k+3, the tables of pairs 4k, 4k+2, 4k+1, 4k+3 (16 bytes each). A row whose tables are all
// equal (e.g. q = 0) gets delta = 1 and zero entries.
void attn_lut_build(const float* q, int64_t M, int64_t P, const float* points, uint8_t* tab,
                    float* delta, float* bias);

// Entry k of pair p in one query row's tables (the order above).
inline int64_t attn_lut_offset(int64_t p, int k) {
  constexpr int64_t slot[4] = {0, 2, 1, 3};
  return (p / 4 * 4 + slot[p % 4]) * 16 + k;
}

// s[r*ss + j] = fma(delta[r], U_rj, bias[r]) * f_j for r < M, j < t, where key row j's P codes
// are the P/2 bytes at codes + j*rs, its scale f_j = (fp16 at scales + j*rs) * mult, and
// U_rj = sum_p tab_r[p][c_jp].
void attn_scores_lut(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                     int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t, int64_t rs,
                     float mult, float* s, int64_t ss);
void attn_scores_lut_ref(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                         int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t,
                         int64_t rs, float mult, float* s, int64_t ss);

namespace detail {
// Rows [0, t - t % 16) (whole blocks of sixteen); the caller does the rest with the reference.
void attn_scores_lut_avx2(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                          int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t,
                          int64_t rs, float mult, float* s, int64_t ss);
}  // namespace detail

}  // namespace aquakv
