// Exact nearest-point search in a grid. Owns: the one definition of "nearest" that every codec
// uses -- the index i maximising score_i(u) = sum_j (2 u_j) G_ij - ||G_i||^2 accumulated in float
// in the order -||G_i||^2, j = 0..d-1 (one rounding per multiply and per add, no FMA), the first
// (smallest) index on ties -- and its fast versions (AVX2 brute force; cluster pruning for
// large grids; a tree of candidate lists for mid-sized grids in 3..6 dimensions; a cell table
// of candidate lists for dense grids in R^1 and R^2; the lattice
// search of quant/e8p.h for the E8P codebook), which return exactly the same index. Not:
// building grids (quant/grid.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "aquakv/quant/grid.h"

namespace aquakv {

// Scalar brute-force reference for one query u (d floats).
int64_t nearest_brute_scalar(const Grid& g, const float* u);

class E8pSearch;

class NearestSearch {
 public:
  // Copies g (g may be destroyed afterwards). The E8P codebook (quant/e8p.h) uses its lattice
  // search; other grids with more than kPruneThreshold points use the candidate tree
  // (nearest_tree.cpp) when 3 <= d <= 6 and n <= kTreeMaxPoints, else cluster pruning; smaller
  // grids brute force.
  // brute_only: none of those structures (search() is search_brute()), for callers that only
  // brute-force a grid that changes every step (the CLVQ generator).
  explicit NearestSearch(const Grid& g, bool brute_only = false);
  ~NearestSearch();
  NearestSearch(const NearestSearch&) = delete;
  NearestSearch& operator=(const NearestSearch&) = delete;

  static constexpr int64_t kPruneThreshold = 1024;
  // Up to this many points, AVX2 brute force runs 8 queries at once (one per lane).
  static constexpr int64_t kLanesMaxPoints = 256;
  // Grids in R^1 or R^2 with at least this many points get a cell table (see nearest.cpp).
  static constexpr int64_t kCellMinPoints = 64;
  // The tree's build time grows fast with d and n (one throwaway measurement, CPU seconds on
  // random normal grids: 6 x 8192 4.2, 7 x 4096 4.8, 8 x 4096 9.7, 8 x 16384 40; EDEN6-4096 ~2),
  // so larger grids keep the clusters.
  static constexpr int64_t kTreeMaxPoints = 4096;

  int dim() const { return d_; }
  int64_t size() const { return n_; }
  const Grid& grid() const { return grid_; }
  // m queries (m x d floats, contiguous) -> m indices. Dispatches on simd_level().
  void search(const float* u, int64_t m, uint16_t* idx) const;
  // Brute force over all points (scalar or AVX2 per simd_level()); used by tests and for small n.
  void search_brute(const float* u, int64_t m, uint16_t* idx) const;

  struct Soa;  // points transposed into blocks of 8 (see nearest.cpp)

 private:
  void build_cells();
  bool search_cells(const float* u, uint16_t* idx) const;
  void build_tree();
  bool search_tree(const float* u, uint16_t* idx) const;

  int d_;
  int64_t n_;
  Grid grid_;
  const std::vector<float>& points_;  // grid_.points: (n, d) row-major, for the scalar path
  std::vector<float> norms_;   // (n) ||G_i||^2
  std::vector<float> negnorms_;  // (n) -||G_i||^2
  std::unique_ptr<Soa> soa_;   // all points, for brute force
  struct Clusters;
  std::unique_ptr<Clusters> clusters_;  // only for n > kPruneThreshold
  struct Cells;
  std::unique_ptr<Cells> cells_;  // only for d <= 2 and n >= kCellMinPoints
  struct Tree;
  std::unique_ptr<Tree> tree_;  // only for 3 <= d <= 6, kPruneThreshold < n <= kTreeMaxPoints
  const E8pSearch* e8p_ = nullptr;  // only for the E8P codebook (the shared e8p_search())
};

// One search per distinct grid (same d, n and points) in the process, built on first request:
// the codecs of every layer that use one grid share its tables (E8P's points and blocks are
// ~5 MB, a 6x4096 grid's clusters take a k-means to build). Thread-safe; a search lives while
// someone holds it.
std::shared_ptr<const NearestSearch> shared_nearest_search(const Grid& g);

}  // namespace aquakv
