// Nearest-point search. Small grids: brute force over blocks of 8 points. Large grids
// (n > kPruneThreshold): the points are grouped into about sqrt(n) clusters (k-means on the
// points, deterministic), each cluster's members sorted by their distance r_i to its centre c.
// A query scans the cluster with the nearest centre first; then, for every other cluster, with
// R = sqrt(D + slack) (D the squared distance of the best point so far, slack a relative 1e-4
// that is orders of magnitude above the rounding error of a d <= 16 term score):
//   - the cluster is skipped when ||u - c|| - r_max > R (no member can be within R), and
//   - otherwise only the members with |r_i - ||u - c||| <= R are scanned (a contiguous range
//     of the sorted members): by the triangle inequality ||u - p_i|| >= |r_i - ||u - c|||, so a
//     member outside that annulus is farther than R.
// Points that are skipped therefore score strictly below the best, and the scanned points are
// scored by the same kernel as brute force, so the result is the brute-force index exactly
// (ties included). In 6 dimensions the cluster test alone prunes little (cluster radii exceed
// the distances between centres); the annulus is what makes a 4096-point grid fast.
#include "aquakv/quant/nearest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <map>
#include <mutex>
#include <tuple>

#include "aquakv/quant/e8p.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/check.h"
#include "aquakv/util/hash.h"
#include "nearest_internal.h"

namespace aquakv {

namespace detail {

void scan_blocks_scalar(const float* blocks, int64_t nblocks, int d, const float* u2,
                        float& best_score, int32_t& best_id) {
  const int64_t stride = nearest_block_floats(d);
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* blk = blocks + b * stride;
    const float* negnorm = blk + d * 8;
    const float* ids = blk + (d + 1) * 8;
    for (int l = 0; l < 8; ++l) {
      float s = negnorm[l];
      for (int j = 0; j < d; ++j) s = s + u2[j] * blk[j * 8 + l];
      int32_t id;
      std::memcpy(&id, ids + l, 4);
      if (s > best_score || (s == best_score && id < best_id)) {
        best_score = s;
        best_id = id;
      }
    }
  }
}

void scan_ids_scalar(const float* pts, const float* negnorm, int d, const uint16_t* ids, int64_t count,
                     const float* u2, float& best_score, int32_t& best_id) {
  for (int64_t q = 0; q < count; ++q) {
    const int32_t id = ids[q];
    const float* p = pts + int64_t(id) * d;
    float s = negnorm[id];
    for (int j = 0; j < d; ++j) s = s + u2[j] * p[j];
    if (s > best_score || (s == best_score && id < best_id)) {
      best_score = s;
      best_id = id;
    }
  }
}

}  // namespace detail

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

namespace detail {


// Writes points `order[0..count)` of g into blocks (count rounded up to a multiple of 8).
void fill_nearest_blocks(const std::vector<float>& pts, const std::vector<float>& norms, int d,
                 const int32_t* order, int64_t count, float* out) {
  const int64_t stride = detail::nearest_block_floats(d);
  for (int64_t s = 0; s < (count + 7) / 8 * 8; ++s) {
    float* blk = out + (s / 8) * stride;
    const int l = int(s % 8);
    const bool real = s < count;
    const int32_t id = real ? order[s] : std::numeric_limits<int32_t>::max();
    for (int j = 0; j < d; ++j) blk[j * 8 + l] = real ? pts[size_t(id) * d + j] : 0.0f;
    blk[d * 8 + l] = real ? -norms[size_t(id)] : kNegInf;
    std::memcpy(blk + (d + 1) * 8 + l, &id, 4);
  }
}

void scan_nearest_blocks(const float* blocks, int64_t nblocks, int d, const float* u2, float& best,
          int32_t& id) {
  if (simd_at_least(SimdLevel::kAvx2)) {
    detail::scan_blocks_avx2(blocks, nblocks, d, u2, best, id);
  } else {
    detail::scan_blocks_scalar(blocks, nblocks, d, u2, best, id);
  }
}

}  // namespace detail

using detail::fill_nearest_blocks;
using detail::scan_nearest_blocks;

struct NearestSearch::Soa {
  std::vector<float> blocks;
  int64_t nblocks = 0;
};

// Cell table for d <= 2: the box [-R, R]^d cut into K^d cells; each cell lists (in increasing
// index order) every point that can be the nearest to some query in the (slightly enlarged)
// cell: point j is dropped only when its smallest squared distance to the cell exceeds the
// smallest over points of the largest squared distance, plus a slack far above float rounding.
// A dropped point is then strictly farther than some listed point for every query in the cell,
// so the first maximum of the score over the list is the brute-force answer. Queries outside the
// box (or non-finite) take brute force.
struct NearestSearch::Cells {
  int k = 0;            // cells per axis
  float r = 0;          // half-width of the box
  float inv_w = 0;      // cells per unit length
  std::vector<int32_t> begin;  // (K^d + 1) offsets into ids
  std::vector<int32_t> ids;
};

struct NearestSearch::Clusters {
  int64_t k = 0;
  std::vector<double> centers;      // (k, d)
  std::vector<double> radius;       // (k) max distance of a member to its centre, inflated
  std::vector<int64_t> member_begin;  // (k + 1) first member of each cluster in `member_r`
  std::vector<double> member_r;     // (n) distance of each member to its centre, ascending per cluster
  std::vector<int64_t> block_begin;  // (k + 1) first block of each cluster in `blocks`
  std::vector<float> blocks;
  double max_norm = 0;              // max ||G_i||^2
};

int64_t nearest_brute_scalar(const Grid& g, const float* u) {
  float best = kNegInf;
  int64_t best_i = 0;
  bool found = false;
  for (int64_t i = 0; i < g.n; ++i) {
    const float* p = g.point(i);
    float nrm = 0.0f;
    for (int j = 0; j < g.d; ++j) nrm = nrm + p[j] * p[j];
    float s = -nrm;
    for (int j = 0; j < g.d; ++j) s = s + (2.0f * u[j]) * p[j];
    if (!found || s > best) {
      best = s;
      best_i = i;
      found = true;
    }
  }
  return best_i;
}

NearestSearch::NearestSearch(const Grid& g, bool brute_only) : d_(g.d), n_(g.n), grid_(g), points_(grid_.points) {
  AQUAKV_CHECK(d_ >= 1 && d_ <= kMaxGridDim && n_ >= 1 && n_ <= kMaxGridPoints);
  norms_.resize(size_t(n_));
  for (int64_t i = 0; i < n_; ++i) {
    float nrm = 0.0f;
    for (int j = 0; j < d_; ++j) nrm = nrm + points_[size_t(i * d_ + j)] * points_[size_t(i * d_ + j)];
    norms_[size_t(i)] = nrm;
  }
  negnorms_.resize(size_t(n_));
  for (int64_t i = 0; i < n_; ++i) negnorms_[size_t(i)] = -norms_[size_t(i)];
  std::vector<int32_t> order(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) order[size_t(i)] = int32_t(i);
  soa_ = std::make_unique<Soa>();
  soa_->nblocks = (n_ + 7) / 8;
  soa_->blocks.resize(size_t(soa_->nblocks * detail::nearest_block_floats(d_)));
  fill_nearest_blocks(points_, norms_, d_, order.data(), n_, soa_->blocks.data());
  if (brute_only) return;
  if (d_ <= 2 && n_ >= kCellMinPoints && n_ <= kPruneThreshold) build_cells();
  if (n_ <= kPruneThreshold) return;
  if (is_e8p_grid(g)) {
    e8p_ = &e8p_search();
    return;
  }
  if (d_ >= 3 && d_ <= 6 && n_ <= kTreeMaxPoints) {
    build_tree();
    return;
  }

  // k-means on the points themselves: k = ~sqrt(n) clusters, init from evenly spaced points.
  auto c = std::make_unique<Clusters>();
  const int64_t k = std::max<int64_t>(2, int64_t(std::sqrt(double(n_))));
  c->k = k;
  c->centers.resize(size_t(k * d_));
  for (int64_t q = 0; q < k; ++q) {
    for (int j = 0; j < d_; ++j) c->centers[size_t(q * d_ + j)] = points_[size_t((q * n_ / k) * d_ + j)];
  }
  std::vector<int64_t> assign(size_t(n_), 0);
  for (int it = 0; it < 6; ++it) {
    for (int64_t i = 0; i < n_; ++i) {
      double best = std::numeric_limits<double>::infinity();
      for (int64_t q = 0; q < k; ++q) {
        double dist = 0;
        for (int j = 0; j < d_; ++j) {
          const double t = double(points_[size_t(i * d_ + j)]) - c->centers[size_t(q * d_ + j)];
          dist += t * t;
        }
        if (dist < best) { best = dist; assign[size_t(i)] = q; }
      }
    }
    std::vector<double> sum(size_t(k * d_), 0.0);
    std::vector<int64_t> cnt(size_t(k), 0);
    for (int64_t i = 0; i < n_; ++i) {
      ++cnt[size_t(assign[size_t(i)])];
      for (int j = 0; j < d_; ++j) sum[size_t(assign[size_t(i)] * d_ + j)] += points_[size_t(i * d_ + j)];
    }
    for (int64_t q = 0; q < k; ++q) {
      if (cnt[size_t(q)] == 0) continue;  // empty cluster keeps its centre (it stays empty)
      for (int j = 0; j < d_; ++j) c->centers[size_t(q * d_ + j)] = sum[size_t(q * d_ + j)] / double(cnt[size_t(q)]);
    }
  }
  // Final membership (nearest centre) and radii.
  std::vector<std::vector<std::pair<double, int32_t>>> members(static_cast<size_t>(k));
  c->radius.assign(size_t(k), 0.0);
  for (int64_t i = 0; i < n_; ++i) {
    double best = std::numeric_limits<double>::infinity();
    int64_t bq = 0;
    for (int64_t q = 0; q < k; ++q) {
      double dist = 0;
      for (int j = 0; j < d_; ++j) {
        const double t = double(points_[size_t(i * d_ + j)]) - c->centers[size_t(q * d_ + j)];
        dist += t * t;
      }
      if (dist < best) { best = dist; bq = q; }
    }
    members[size_t(bq)].emplace_back(std::sqrt(best), int32_t(i));
    c->radius[size_t(bq)] = std::max(c->radius[size_t(bq)], std::sqrt(best));
    c->max_norm = std::max(c->max_norm, double(norms_[size_t(i)]));
  }
  c->block_begin.assign(size_t(k + 1), 0);
  c->member_begin.assign(size_t(k + 1), 0);
  for (int64_t q = 0; q < k; ++q) {
    c->radius[size_t(q)] = c->radius[size_t(q)] * (1 + 1e-6) + 1e-6;
    c->block_begin[size_t(q + 1)] = c->block_begin[size_t(q)] + int64_t(members[size_t(q)].size() + 7) / 8;
    c->member_begin[size_t(q + 1)] = c->member_begin[size_t(q)] + int64_t(members[size_t(q)].size());
  }
  c->blocks.resize(size_t(c->block_begin[size_t(k)] * detail::nearest_block_floats(d_)));
  for (int64_t q = 0; q < k; ++q) {
    auto& mq = members[size_t(q)];
    std::sort(mq.begin(), mq.end());  // by distance to the centre, then index
    std::vector<int32_t> ids;
    for (const auto& [r, i] : mq) {
      ids.push_back(i);
      c->member_r.push_back(r);
    }
    fill_nearest_blocks(points_, norms_, d_, ids.data(), int64_t(ids.size()),
                c->blocks.data() + c->block_begin[size_t(q)] * detail::nearest_block_floats(d_));
  }
  clusters_ = std::move(c);
}

void NearestSearch::build_cells() {
  auto c = std::make_unique<Cells>();
  float maxabs = 0;
  double maxnorm = 0;
  for (float v : points_) maxabs = std::max(maxabs, std::fabs(v));
  for (float v : norms_) maxnorm = std::max(maxnorm, double(v));
  c->r = std::max(4.0f, maxabs);
  c->k = d_ == 1 ? 1024 : 64;
  const double w = 2.0 * c->r / c->k;
  c->inv_w = float(c->k / (2.0 * c->r));
  const double slack = 1e-4 * (1.0 + d_ * double(c->r) * c->r + maxnorm);
  const int64_t ncell = d_ == 1 ? c->k : int64_t(c->k) * c->k;
  c->begin.assign(size_t(ncell + 1), 0);
  std::vector<double> dmin(static_cast<size_t>(n_));
  for (int64_t cell = 0; cell < ncell; ++cell) {
    double lo[2], hi[2];
    const int64_t ix[2] = {cell % c->k, cell / c->k};
    for (int j = 0; j < d_; ++j) {
      lo[j] = -c->r + ix[j] * w - 1e-3 * w;
      hi[j] = -c->r + (ix[j] + 1) * w + 1e-3 * w;
    }
    double best_max = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n_; ++i) {
      double mn = 0, mx = 0;
      for (int j = 0; j < d_; ++j) {
        const double p = points_[size_t(i * d_ + j)];
        const double near = p < lo[j] ? lo[j] - p : (p > hi[j] ? p - hi[j] : 0.0);
        const double far = std::max(std::fabs(p - lo[j]), std::fabs(p - hi[j]));
        mn += near * near;
        mx += far * far;
      }
      dmin[size_t(i)] = mn;
      best_max = std::min(best_max, mx);
    }
    for (int64_t i = 0; i < n_; ++i) {
      if (dmin[size_t(i)] <= best_max + slack) c->ids.push_back(int32_t(i));
    }
    c->begin[size_t(cell + 1)] = int32_t(c->ids.size());
  }
  cells_ = std::move(c);
}

// Cell-table search for one query; returns false when the query is outside the table's box.
bool NearestSearch::search_cells(const float* u, uint16_t* idx) const {
  const Cells& c = *cells_;
  int64_t cell = 0, stride = 1;
  for (int j = 0; j < d_; ++j) {
    const float t = (u[j] + c.r) * c.inv_w;
    if (!(t >= 0.0f && t < float(c.k))) return false;  // also NaN
    cell += std::min<int64_t>(int64_t(t), c.k - 1) * stride;
    stride *= c.k;
  }
  float u2[2] = {2.0f * u[0], d_ == 2 ? 2.0f * u[1] : 0.0f};
  float best = kNegInf;
  int32_t id = 0;
  for (int32_t q = c.begin[size_t(cell)]; q < c.begin[size_t(cell + 1)]; ++q) {
    const int32_t i = c.ids[size_t(q)];
    const float* p = points_.data() + int64_t(i) * d_;
    float s = negnorms_[size_t(i)];
    s = s + u2[0] * p[0];
    if (d_ == 2) s = s + u2[1] * p[1];
    if (s > best) {
      best = s;
      id = i;
    }
  }
  *idx = uint16_t(id);
  return true;
}

NearestSearch::~NearestSearch() = default;

void NearestSearch::search_brute(const float* u, int64_t m, uint16_t* idx) const {
  int64_t done = 0;
  if (simd_at_least(SimdLevel::kAvx2) && n_ <= kLanesMaxPoints) {
    done = detail::search_lanes_avx2(points_.data(), negnorms_.data(), n_, d_, u, m, idx);
  }
  float u2[kMaxGridDim];
  for (int64_t r = done; r < m; ++r) {
    for (int j = 0; j < d_; ++j) u2[j] = 2.0f * u[r * d_ + j];
    float best = kNegInf;
    int32_t id = std::numeric_limits<int32_t>::max();
    scan_nearest_blocks(soa_->blocks.data(), soa_->nblocks, d_, u2, best, id);
    // All scores -inf or NaN (non-finite query): fall back to index 0 like the reference.
    idx[r] = id == std::numeric_limits<int32_t>::max() ? 0 : uint16_t(id);
  }
}

void NearestSearch::search(const float* u, int64_t m, uint16_t* idx) const {
  if (cells_) {
    for (int64_t r = 0; r < m; ++r) {
      if (!search_cells(u + r * d_, idx + r)) search_brute(u + r * d_, 1, idx + r);
    }
    return;
  }
  if (tree_) {
    for (int64_t r = 0; r < m; ++r) {
      if (!search_tree(u + r * d_, idx + r)) search_brute(u + r * d_, 1, idx + r);
    }
    return;
  }
  if (e8p_) {
    for (int64_t r = 0; r < m; ++r) {
      if (!e8p_->search_one(u + r * d_, idx + r)) search_brute(u + r * d_, 1, idx + r);
    }
    return;
  }
  if (!clusters_) {
    search_brute(u, m, idx);
    return;
  }
  const Clusters& c = *clusters_;
  const int64_t stride = detail::nearest_block_floats(d_);
  std::vector<double> dc(static_cast<size_t>(c.k));
  float u2[kMaxGridDim];
  for (int64_t r = 0; r < m; ++r) {
    const float* ur = u + r * d_;
    double unorm = 0;
    bool finite = true;
    for (int j = 0; j < d_; ++j) {
      u2[j] = 2.0f * ur[j];
      unorm += double(ur[j]) * ur[j];
      finite = finite && std::isfinite(ur[j]);
    }
    if (!finite) {
      search_brute(ur, 1, idx + r);
      continue;
    }
    int64_t first = 0;
    for (int64_t q = 0; q < c.k; ++q) {
      double dist = 0;
      for (int j = 0; j < d_; ++j) {
        const double t = double(ur[j]) - c.centers[size_t(q * d_ + j)];
        dist += t * t;
      }
      dc[size_t(q)] = std::sqrt(dist);
      if (dc[size_t(q)] < dc[size_t(first)]) first = q;
    }
    float best = kNegInf;
    int32_t id = std::numeric_limits<int32_t>::max();
    const double slack = 1e-4 * (1.0 + unorm + c.max_norm);
    // Members t0..t1 (positions in the cluster's sorted order) cover whole blocks of 8.
    auto visit = [&](int64_t q, int64_t t0, int64_t t1) {
      const int64_t b0 = c.block_begin[size_t(q)] + t0 / 8, b1 = c.block_begin[size_t(q)] + (t1 + 7) / 8;
      scan_nearest_blocks(c.blocks.data() + b0 * stride, b1 - b0, d_, u2, best, id);
    };
    visit(first, 0, c.member_begin[size_t(first + 1)] - c.member_begin[size_t(first)]);
    for (int64_t q = 0; q < c.k; ++q) {
      if (q == first) continue;
      // Every point within R of u is within sqrt(D + slack), D = |u|^2 - best (its distance^2).
      const double reach = unorm - double(best) + slack;
      const double big_r = std::sqrt(std::max(0.0, reach)) * (1 + 1e-9) + 1e-9;
      if (dc[size_t(q)] - c.radius[size_t(q)] > big_r) continue;
      const double* r0 = c.member_r.data() + c.member_begin[size_t(q)];
      const double* r1 = c.member_r.data() + c.member_begin[size_t(q + 1)];
      const int64_t t0 = std::lower_bound(r0, r1, dc[size_t(q)] - big_r) - r0;
      const int64_t t1 = std::upper_bound(r0, r1, dc[size_t(q)] + big_r) - r0;
      if (t0 < t1) visit(q, t0, t1);
    }
    idx[r] = uint16_t(id);
  }
}

namespace {
// The lookup key's hash: at most ~4096 coordinates spread evenly over the grid (every
// coordinate of a small grid). Hashing all of E8P's 2 MiB took ~3 ms per codec, and a cache
// builds two codecs per layer and stream; a key match is confirmed coordinate by coordinate.
uint64_t grid_sample_hash(const Grid& g) {
  const int64_t total = int64_t(g.points.size());
  const int64_t stride = std::max<int64_t>(1, total / 4096);
  uint64_t h = kFnv1a64Basis;
  for (int64_t i = 0; i < total; i += stride) h = fnv1a64(&g.points[size_t(i)], sizeof(float), h);
  return h;
}
}  // namespace

std::shared_ptr<const NearestSearch> shared_nearest_search(const Grid& g) {
  static std::mutex mu;
  static std::map<std::tuple<int, int64_t, uint64_t>, std::weak_ptr<const NearestSearch>> cache;
  const uint64_t h = grid_sample_hash(g);
  const auto key = std::make_tuple(g.d, g.n, h);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) {
    auto s = it->second.lock();
    if (s && s->grid().points == g.points) return s;  // equal content, not only equal hash
    if (s) return std::make_shared<const NearestSearch>(g);  // a hash collision: unshared
  }
  for (auto i = cache.begin(); i != cache.end();) i = i->second.expired() ? cache.erase(i) : std::next(i);
  auto s = std::make_shared<const NearestSearch>(g);
  cache[key] = s;
  return s;
}

}  // namespace aquakv
