// Kernels of tiled (flash-style) attention: M query rows of one KV head against a tile of t key
// and value rows. Owns: the score product, the online-softmax update and the weighted sum of
// values, each with a scalar reference. Not: which rows form a tile, positions and masks
// (kv/attend.h), RoPE (ops/nn.h).
//
// Online softmax (one query row r over tiles j = 1, 2, ...): with running max m, running sum l
// and unnormalized output a,
//   m' = max(m, max_j s_j),  alpha = e^(m - m'),  p_j = e^(s_j - m'),
//   l' = alpha l + sum_j p_j,  a' = alpha a + sum_j p_j v_j,
// and the output is a / l after the last tile: softmax(s) . V exactly, up to rounding, without
// ever holding all scores. Masked scores are -inf (p_j = 0).
#pragma once

#include <cstdint>

namespace aquakv {

// s[r*ss + j] = q[r*hd ..] . k[j*ks ..] for r < M, j < t (q rows packed, stride hd).
void attn_scores(const float* q, int64_t M, int64_t hd, const float* k, int64_t t, int64_t ks,
                 float* s, int64_t ss);
// Same with IEEE-half key rows.
void attn_scores_f16(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                     int64_t ks, float* s, int64_t ss);

// The online-softmax step above for M rows of t scores (s rows of stride ss are overwritten with
// p_j); m, l: (M); a: (M, hd) scaled by alpha. Rows whose scores are all -inf are left as they
// are (their p_j are set to 0).
void attn_online_update(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l, float* a,
                        int64_t hd);

// a[r*hd + c] += sum_j p[r*ps + j] * v[j*vs + c].
void attn_accum(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                int64_t hd, float* a);
void attn_accum_f16(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                    int64_t vs, int64_t hd, float* a);

// Merges online-softmax state (m2, l2, a2) into (m, l, a) for M rows.
void attn_merge(float* m, float* l, float* a, const float* m2, const float* l2, const float* a2,
                int64_t M, int64_t hd);

// References: plain loops with double sums, libm exp. For tests.
void attn_scores_ref(const float* q, int64_t M, int64_t hd, const float* k, int64_t t,
                     int64_t ks, float* s, int64_t ss);
void attn_scores_f16_ref(const float* q, int64_t M, int64_t hd, const uint16_t* k, int64_t t,
                         int64_t ks, float* s, int64_t ss);
void attn_online_update_ref(float* s, int64_t M, int64_t t, int64_t ss, float* m, float* l,
                            float* a, int64_t hd);
void attn_accum_ref(const float* p, int64_t M, int64_t t, int64_t ps, const float* v, int64_t vs,
                    int64_t hd, float* a);
void attn_accum_f16_ref(const float* p, int64_t M, int64_t t, int64_t ps, const uint16_t* v,
                        int64_t vs, int64_t hd, float* a);

}  // namespace aquakv
