// Candidate tree for mid-sized grids in 3..6 dimensions (e.g. 6 x 4096), where cluster bounds
// prune nothing (cluster radii exceed the distances between centres).
//
// The box [-B, B]^d around the grid is cut recursively at the middle of its widest side; every
// node keeps the points that can still be the brute force's answer for some query in its box.
// Point j is dropped from a box when one reference point i beats it everywhere in the box by
// more than the float rounding of a score:
//   ||x - p_j||^2 - ||x - p_i||^2 = 2 x.(p_i - p_j) + ||p_j||^2 - ||p_i||^2 > margin  for all x in box,
// a linear function of x, so its minimum over the box is at a corner, coordinate by coordinate:
//   sum_k min(2 lo_k w_k, 2 hi_k w_k) + ||p_j||^2 - ||p_i||^2,  w = p_i - p_j.
// References: the kRefs listed points nearest the box centre. Splits go to the leaf with the
// largest expected scan cost (N(0, I) mass of its box x its list length) until every leaf has at
// most kLeafPoints candidates or the node budget is spent (EDEN6-4096: 16384 leaves of ~100
// candidates on average, ~3.5 MB of ids; ~2 s to build, once per process since codecs share
// their search). A leaf stores its candidates' ids in increasing order. A query inside the root
// box walks to its leaf and scores that list with the brute force's float score (AVX2: 8
// candidates per vector, gathered): the winner is never dropped (nobody beats it), so the first
// maximum over the list is the brute-force index, ties included. Queries outside the box (or
// non-finite) take the brute force. margin = 1e-4 (1 + d B^2 + max ||p||^2) is orders of
// magnitude above the rounding of a score of a query in the box.
#include <algorithm>
#include <cmath>
#include <limits>

#include "aquakv/quant/nearest.h"
#include "aquakv/util/cpu.h"
#include "nearest_internal.h"

namespace aquakv {

namespace {

constexpr int64_t kLeafPoints = 64;
constexpr int kMaxDepth = 40;
constexpr int64_t kMaxNodes = int64_t(1) << 15;
constexpr int kRefs = 16;

}  // namespace

void NearestSearch::build_tree() {
  auto t = std::make_unique<Tree>();
  float maxabs = 0;
  double maxnorm = 0;
  for (float v : points_) maxabs = std::max(maxabs, std::fabs(v));
  for (float v : norms_) maxnorm = std::max(maxnorm, double(v));
  t->bound = std::max(4.0f, maxabs + 1.0f);
  const double margin = 1e-4 * (1.0 + d_ * double(t->bound) * t->bound + maxnorm);
  struct Work {
    std::vector<double> lo, hi;
    std::vector<int32_t> ids;
    int depth;
    int32_t node;
  };
  // Split order: the leaf with the largest expected scan cost, mass(box) * |list|, where mass is
  // the N(0, I) probability of the box (HIGGS queries are close to normal) -- a heuristic for
  // where the node budget goes, not a condition of exactness.
  auto mass = [&](const Work& w) {
    double m = 1;
    for (int k = 0; k < d_; ++k) m *= 0.5 * (std::erf(w.hi[size_t(k)] / std::sqrt(2.0)) - std::erf(w.lo[size_t(k)] / std::sqrt(2.0)));
    return m * double(w.ids.size());
  };
  std::vector<std::pair<double, size_t>> heap;  // (cost, index into pending)
  std::vector<Work> pending;
  auto push = [&](Work&& w) {
    heap.emplace_back(mass(w), pending.size());
    pending.push_back(std::move(w));
    std::push_heap(heap.begin(), heap.end());
  };
  {
    Work root{std::vector<double>(size_t(d_), -t->bound), std::vector<double>(size_t(d_), t->bound), {}, 0, 0};
    for (int64_t i = 0; i < n_; ++i) root.ids.push_back(int32_t(i));
    t->nodes.emplace_back();
    push(std::move(root));
  }
  std::vector<std::vector<int32_t>> leaves;
  // Keeps the ids of `in` that no reference beats everywhere in [lo, hi] by more than margin.
  auto filter = [&](const std::vector<int32_t>& in, const std::vector<double>& lo, const std::vector<double>& hi) {
    std::vector<std::pair<double, int32_t>> byc;
    for (int32_t i : in) {
      double dist = 0;
      for (int k = 0; k < d_; ++k) {
        const double e = points_[size_t(i) * d_ + k] - 0.5 * (lo[size_t(k)] + hi[size_t(k)]);
        dist += e * e;
      }
      byc.emplace_back(dist, i);
    }
    const size_t nref = std::min<size_t>(kRefs, byc.size());
    std::partial_sort(byc.begin(), byc.begin() + long(nref), byc.end());
    // The references' coordinates and the box's corners as doubles, once per node.
    double rp[kRefs][kMaxGridDim], rn[kRefs], lo2[kMaxGridDim], hi2[kMaxGridDim];
    for (size_t r = 0; r < nref; ++r) {
      const int32_t i = byc[r].second;
      for (int k = 0; k < d_; ++k) rp[r][k] = points_[size_t(i) * d_ + k];
      rn[r] = norms_[size_t(i)];
    }
    for (int k = 0; k < d_; ++k) {
      lo2[k] = 2 * lo[size_t(k)];
      hi2[k] = 2 * hi[size_t(k)];
    }
    std::vector<int32_t> out;
    for (int32_t j : in) {
      double pj[kMaxGridDim];
      for (int k = 0; k < d_; ++k) pj[k] = points_[size_t(j) * d_ + k];
      const double nj = norms_[size_t(j)];
      bool dropped = false;
      for (size_t r = 0; r < nref && !dropped; ++r) {
        double m = nj - rn[r];
        for (int k = 0; k < d_; ++k) {
          const double w = rp[r][k] - pj[k];
          m += std::min(lo2[k] * w, hi2[k] * w);
        }
        dropped = m > margin;
      }
      if (!dropped) out.push_back(j);
    }
    return out;
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Work w = std::move(pending[heap.back().second]);
    heap.pop_back();
    if (int64_t(w.ids.size()) <= kLeafPoints || w.depth >= kMaxDepth || int64_t(t->nodes.size()) + 2 > kMaxNodes) {
      t->nodes[size_t(w.node)].child = int32_t(leaves.size());
      leaves.push_back(std::move(w.ids));
      continue;
    }
    int dim = 0;
    for (int k = 1; k < d_; ++k) {
      if (w.hi[size_t(k)] - w.lo[size_t(k)] > w.hi[size_t(dim)] - w.lo[size_t(dim)]) dim = k;
    }
    // The split is a float, and the boxes are cut exactly there.
    const double mid = double(float(0.5 * (w.lo[size_t(dim)] + w.hi[size_t(dim)])));
    const auto c = int32_t(t->nodes.size());
    t->nodes.emplace_back();
    t->nodes.emplace_back();
    t->nodes[size_t(w.node)].dim = dim;
    t->nodes[size_t(w.node)].split = float(mid);
    t->nodes[size_t(w.node)].child = c;
    // A query with x[dim] < split (in float) lies in the low box, any other in the high box;
    // both boxes are closed and share the plane x[dim] = mid.
    Work a{w.lo, w.hi, {}, w.depth + 1, c};
    a.hi[size_t(dim)] = mid;
    a.ids = filter(w.ids, a.lo, a.hi);
    Work b{w.lo, w.hi, {}, w.depth + 1, c + 1};
    b.lo[size_t(dim)] = mid;
    b.ids = filter(w.ids, b.lo, b.hi);
    push(std::move(a));
    push(std::move(b));
  }
  t->leaf_begin.assign(leaves.size() + 1, 0);
  for (size_t l = 0; l < leaves.size(); ++l) {
    std::sort(leaves[l].begin(), leaves[l].end());
    for (int32_t i : leaves[l]) t->ids.push_back(uint16_t(i));
    while (t->ids.size() % 8 != 0) t->ids.push_back(t->ids.back());
    t->leaf_begin[l + 1] = int32_t(t->ids.size());
  }
  tree_ = std::move(t);
}

bool NearestSearch::search_tree(const float* u, uint16_t* idx) const {
  const Tree& t = *tree_;
  float u2[kMaxGridDim];
  for (int k = 0; k < d_; ++k) {
    if (!(std::fabs(u[k]) <= t.bound)) return false;  // outside the box, or NaN
    u2[k] = 2.0f * u[k];
  }
  int32_t node = 0;
  while (t.nodes[size_t(node)].dim >= 0) {
    const Tree::Node& nd = t.nodes[size_t(node)];
    node = nd.child + (u[nd.dim] < nd.split ? 0 : 1);
  }
  const int32_t leaf = t.nodes[size_t(node)].child;
  float best = -std::numeric_limits<float>::infinity();
  int32_t id = std::numeric_limits<int32_t>::max();
  const uint16_t* ids = t.ids.data() + t.leaf_begin[size_t(leaf)];
  const int64_t count = t.leaf_begin[size_t(leaf) + 1] - t.leaf_begin[size_t(leaf)];
  if (simd_at_least(SimdLevel::kAvx2)) {
    detail::scan_ids_avx2(points_.data(), negnorms_.data(), d_, ids, count, u2, best, id);
  } else {
    detail::scan_ids_scalar(points_.data(), negnorms_.data(), d_, ids, count, u2, best, id);
  }
  if (id == std::numeric_limits<int32_t>::max()) return false;
  *idx = uint16_t(id);
  return true;
}

}  // namespace aquakv
