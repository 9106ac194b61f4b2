// Private to src/quant: the blocked point layout shared by the scalar and AVX2 search kernels.
// A block holds 8 points: d rows of 8 coordinates, then 8 values -||G_i||^2 (padding slots have
// coordinates 0 and -inf, so they never win), then 8 point ids (int32 bit patterns).
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/quant/nearest.h"

namespace aquakv {

// The candidate tree (nearest_tree.cpp has the math).
struct NearestSearch::Tree {
  struct Node {
    int32_t dim = -1;   // -1: leaf
    float split = 0;    // x[dim] < split: child, else child + 1
    int32_t child = 0;  // first child (nodes), or the leaf's index (leaves)
  };
  float bound = 0;  // the root box is [-bound, bound]^d
  std::vector<Node> nodes;
  std::vector<int32_t> leaf_begin;  // (leaves + 1) offsets into ids
  std::vector<uint16_t> ids;        // each leaf's candidates, ascending, padded to a multiple of 8
                                    // by repeating the last (a repeat never changes the result)
};

}  // namespace aquakv

namespace aquakv::detail {

inline int64_t nearest_block_floats(int d) { return int64_t(d + 2) * 8; }

// Scans nblocks blocks starting at `blocks` for the query u2 = 2u (d floats), updating
// (best_score, best_id) by the rule: s > best or (s == best and id < best_id).
void scan_blocks_scalar(const float* blocks, int64_t nblocks, int d, const float* u2,
                        float& best_score, int32_t& best_id);
void scan_blocks_avx2(const float* blocks, int64_t nblocks, int d, const float* u2,
                      float& best_score, int32_t& best_id);

// Writes points order[0..count) of (pts, norms) into blocks (count rounded up to a multiple of 8).
void fill_nearest_blocks(const std::vector<float>& pts, const std::vector<float>& norms, int d,
                         const int32_t* order, int64_t count, float* out);
// scan_blocks_avx2 or scan_blocks_scalar per simd_level().
void scan_nearest_blocks(const float* blocks, int64_t nblocks, int d, const float* u2, float& best,
                         int32_t& id);

// Scores the points ids[0..count) (count a multiple of 8; ids < 65536) with the same rule as
// scan_blocks_*, reading the points from pts (n, d) and -||p||^2 from negnorm (n).
void scan_ids_scalar(const float* pts, const float* negnorm, int d, const uint16_t* ids, int64_t count,
                     const float* u2, float& best_score, int32_t& best_id);
void scan_ids_avx2(const float* pts, const float* negnorm, int d, const uint16_t* ids, int64_t count,
                   const float* u2, float& best_score, int32_t& best_id);

// Brute force with 8 queries per vector (one query per lane), the points visited in index order
// with a strict > so the first maximum wins; scores as in scan_blocks_*. Handles the first
// m / 8 * 8 queries of u (m x d) and returns how many it handled. pts: (n, d), negnorm: (n).
int64_t search_lanes_avx2(const float* pts, const float* negnorm, int64_t n, int d, const float* u,
                          int64_t m, uint16_t* idx);

}  // namespace aquakv::detail
