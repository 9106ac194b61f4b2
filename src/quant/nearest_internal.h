// Private to src/quant: the blocked point layout shared by the scalar and AVX2 search kernels.
// A block holds 8 points: d rows of 8 coordinates, then 8 values -||G_i||^2 (padding slots have
// coordinates 0 and -inf, so they never win), then 8 point ids (int32 bit patterns).
#pragma once

#include <cstdint>

namespace aquakv::detail {

inline int64_t nearest_block_floats(int d) { return int64_t(d + 2) * 8; }

// Scans nblocks blocks starting at `blocks` for the query u2 = 2u (d floats), updating
// (best_score, best_id) by the rule: s > best or (s == best and id < best_id).
void scan_blocks_scalar(const float* blocks, int64_t nblocks, int d, const float* u2,
                        float& best_score, int32_t& best_id);
void scan_blocks_avx2(const float* blocks, int64_t nblocks, int d, const float* u2,
                      float& best_score, int32_t& best_id);

// Brute force with 8 queries per vector (one query per lane), the points visited in index order
// with a strict > so the first maximum wins; scores as in scan_blocks_*. Handles the first
// m / 8 * 8 queries of u (m x d) and returns how many it handled. pts: (n, d), negnorm: (n).
int64_t search_lanes_avx2(const float* pts, const float* negnorm, int64_t n, int d, const float* u,
                          int64_t m, uint16_t* idx);

}  // namespace aquakv::detail
