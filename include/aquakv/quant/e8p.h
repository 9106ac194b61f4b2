// The E8P codebook (QuIP#'s lattice codebook: 65536 points in R^8, 16 bits per 8 values = 2 bits
// per value) and its exact structured nearest-point search. Owns: the codebook's construction
// from its lattice description, and the search. Not: grid files and the generic grids
// (quant/grid.h, whose builtin_grid(8, 65536) is this codebook) or the generic search
// (quant/nearest.h, which hands queries here when it is given this codebook).
//
// Structure (derived from the published codebook file; a test rebuilds the file bit for bit):
//   every point is  p = s (.) a + sigma 1,  with
//   a     one of 256 "absolute patterns", coordinates in {1/2, 3/2, 5/2, ...}: the 227 such
//         vectors with ||a||^2 <= 10, and 29 of the 56 arrangements of (3/2 x5, 1/2 x3)
//         (||a||^2 = 12; which 29 is data, kE8pNorm12Masks in e8p.cpp),
//   s     a sign vector in {+1, -1}^8 with sum_i s_i a_i even (128 of the 256), so that
//         s (.) a lies in D8 + 1/2 (half-integer coordinates, even sum),
//   sigma +1/4 or -1/4.
// 256 x 128 x 2 = 65536 distinct points, all in one coset of E8: D8 + 1/2 + 1/4 and
// D8 + 1/2 - 1/4 = D8 + 1/4 together are E8 + 1/4. A point's index is its rank in the
// lexicographic order of its coordinates (the order of the published file).
//
// Search (exact: the same index as nearest_brute_scalar over all 65536 points, ties included):
//   For sigma fixed let v = u - sigma 1. Then ||u - p||^2 = ||v||^2 - 2 sum_i s_i a_i v_i + ||a||^2.
//   For a fixed, sum_i s_i a_i v_i <= T_a = sum_i c_i with c_i = a_i |v_i|, with equality at
//   s0 = sign(v). The parity: negating coordinate i changes sum_i s_i a_i by the odd integer
//   2 a_i, so  sum_i s_i a_i = sum_i a_i + #{i: s_i = -1} (mod 2),  and s0 is allowed iff
//   #neg(s0) = sum_i a_i (mod 2); otherwise the best allowed s flips the one coordinate with the
//   smallest c_i. So the distance to pattern a's best point is
//       D_a = ||v||^2 - 2 (T_a - [parity wrong] 2 min_i c_i) + ||a||^2,
//   at most 512 evaluations of 8 products (2 shifts x 256 patterns) instead of 65536 distances.
//   Most are skipped: the patterns fall into 8 shapes (the multiset of their coordinates), and
//   for every arrangement a of a shape sum_i |v_i| a_i <= sum_i |v|_(i) a_(i) with both sorted
//   decreasingly (rearrangement inequality), so lb = ||v||^2 - 2 sum_i |v|_(i) a_(i) + ||a||^2
//   bounds D_a from below for the whole shape. The (shift, shape) pair of lowest lb is evaluated
//   first, then every other whose lb is within the best D_a so far plus the slack (a simulation
//   on 2000 N(0, I) queries: ~1.4 of the 16 pairs have lb within the final best, ~57 patterns).
//   Exactness in float: the brute force ranks points by float scores whose rounding error is
//   far below slack = 1e-4 (1 + ||u||^2 + max ||p||^2). Every point whose float score could
//   reach the best one has true distance <= D* + slack (D* = min_a D_a); the search lists all
//   of them -- for each (sigma, a) with D_a <= D* + slack, each flip set F of s0 with the
//   required parity and ||v||^2 - 2 T_a + ||a||^2 + 4 sum_{i in F} c_i <= D* + slack (almost
//   always one point) -- and ranks the listed points with the brute force's own float score,
//   first index on ties.
//
// Lattice decoder (tried first; about 4x cheaper): the codebook is the part of E8 + 1/4 whose
// points x + sigma have x's absolute coordinates a codebook pattern. For each shift, x ranges
// over the coset X = {x in (Z + 1/2)^8 : sum_i x_i even}. Round each v_i to the nearest half-
// integer h_i (error e_i = v_i - h_i in [-1/2, 1/2)); any x in X is h + m with m integer,
// sum_i m_i = P (mod 2), P = [sum_i h_i odd], and ||v - x||^2 = ||e||^2 + sum_i (m_i^2 - 2 m_i e_i).
// A step m_i = sign(e_i) costs c_i = 1 - 2|e_i| >= 0; every other nonzero m_i costs >= 1. So when
// the budget C = lim - ||e||^2 is below 1, the points of X within lim are exactly h plus steps on
// subsets S of {i : c_i <= C} with |S| = P (mod 2) and sum_{i in S} c_i <= C. With lim = the
// smaller coset minimum plus the slack above, these are all lattice points the brute force could
// rank first; if every one of them is a codebook point, the codebook's nearest is the lattice's
// and the listed points are ranked by the brute force's float score as above. Otherwise (a
// nearest lattice point outside the codebook, C >= 1, or ||u||^2 > 64) the pattern search runs.
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/quant/grid.h"

namespace aquakv {

// The codebook ("E8P", d = 8, n = 65536), built once on first use.
const Grid& e8p_grid();
// True when g has E8P's shape and exactly its points in its order.
bool is_e8p_grid(const Grid& g);

class E8pSearch {
 public:
  static constexpr int kMaxSlots = 512;  // patterns grouped by shape, padded to blocks of 8
  static constexpr int kMaxShapes = 16;
  E8pSearch();
  // One query u (8 floats) -> its index. Returns false (idx untouched) when u or ||u||^2 is not
  // finite; the caller then takes the brute force, which defines those cases. Tries the lattice
  // decoder first (search_lattice), the pattern search when it cannot certify its answer.
  bool search_one(const float* u, uint16_t* idx) const;
  // The lattice decoder alone: true (idx set to the brute force's index) when the nearest points
  // of E8 + 1/4 -- all within the slack of the nearest -- are codebook points; false (idx
  // untouched) otherwise. ~73% of N(0, I) queries are decided here.
  bool search_lattice(const float* u, uint16_t* idx) const;
  // The pattern search alone (the fallback; exact for every finite query).
  bool search_patterns(const float* u, uint16_t* idx) const;

 private:
  // The two searches above for a query of squared norm unorm (computed once per query).
  bool decide_lattice(const float* u, double unorm, uint16_t* idx) const;
  bool decide_patterns(const float* u, double unorm, uint16_t* idx) const;
  struct Shape {
    float a[8];        // the shape's coordinates, decreasing
    float norm;        // ||a||^2
    int slot0, slot1;  // its patterns' slots (a multiple of 8 each)
  };
  std::vector<Shape> shapes_;
  int nslots_ = 0;
  std::vector<float> pat_;       // (8, nslots): coordinate j of the pattern in slot k at [j * nslots + k]
  std::vector<float> pnorm_;     // (nslots) ||a||^2; +inf in padding slots
  std::vector<int32_t> ppar_;    // (nslots) sum_i a_i mod 2
  std::vector<int32_t> slot_pattern_;  // (nslots) the pattern in each slot (-1: padding)
  std::vector<uint16_t> index_;  // (2, 256, 256): [shift][pattern][sign mask] -> point index
  // (3^8): pattern of the absolute coordinates a_i = 1/2 + t_i, t_i in {0, 1, 2}, keyed by
  // sum_i t_i 3^i; -1 where a is not a codebook pattern (a coordinate >= 7/2 never is).
  std::vector<int16_t> pattern_of_key_;
};

// The search shared by every user (its tables are built once, ~0.3 MB).
const E8pSearch& e8p_search();

namespace detail {
// The pattern pass: dist[k] = ||v||^2 - 2 (T_k - [par_k != negpar] 2 min_i c_ik) + ||a_k||^2
// for the slots k in [k0, k1) (multiples of 8), pattern coordinate j of slot k at
// pat[j * stride + k], av = |v| (8 floats), nv = ||v||^2. The scalar version is the reference;
// the AVX2 one performs the same float operations in the same order (identical values).
// Returns min_k dist[k] (exact in any order).
float e8p_pattern_dists_scalar(const float* pat, int64_t stride, const float* pnorm, const int32_t* ppar,
                              int64_t k0, int64_t k1, const float* av, float nv, int32_t negpar,
                              float* dist);
float e8p_pattern_dists_avx2(const float* pat, int64_t stride, const float* pnorm, const int32_t* ppar,
                            int64_t k0, int64_t k1, const float* av, float nv, int32_t negpar,
                            float* dist);
// Bit k - k0 set <=> dist[k] <= lim, for k in [k0, k1), k1 - k0 <= 64.
uint64_t e8p_within_scalar(const float* dist, int64_t k0, int64_t k1, float lim);
uint64_t e8p_within_avx2(const float* dist, int64_t k0, int64_t k1, float lim);
// The lattice decoder's rounding, both shifts at once: for sh in {0, 1} (sigma = +1/4, -1/4)
// and j < 8, v = u_j - sigma, f = floor(v), h[8 sh + j] = f + 1/2, e = v - h,
// step[8 sh + j] = e >= 0 ? +1 : -1, c[8 sh + j] = 1 - 2|e|; base[sh] = sum_j e^2 summed as
// ((e0^2 + e4^2) + (e2^2 + e6^2)) + ((e1^2 + e5^2) + (e3^2 + e7^2)); cmin[sh] = min_j c;
// par[sh] = (sum_j f) mod 2. Requires |u_j| <= 8 (the caller's ||u||^2 <= 64). The AVX2 version
// performs the same float operations (identical values).
void e8p_cosets_scalar(const float* u, float* h, float* step, float* c, float* base, float* cmin, int32_t* par);
void e8p_cosets_avx2(const float* u, float* h, float* step, float* c, float* base, float* cmin, int32_t* par);
}  // namespace detail

}  // namespace aquakv
