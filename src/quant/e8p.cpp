// The E8P codebook and its structured exact search (the math is in quant/e8p.h).
#include "aquakv/quant/e8p.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <functional>
#include <map>

#include "aquakv/util/check.h"
#include "aquakv/util/cpu.h"

namespace aquakv {

namespace {

// The 29 norm-12 patterns: bit i set <=> coordinate i is 3/2 (the other three are 1/2). Read off
// the published codebook file (QUIPSHARP8-65536): its other 27 arrangements are not in it.
constexpr uint8_t kE8pNorm12Masks[29] = {0x37, 0x3b, 0x3d, 0x3e, 0x57, 0x5b, 0x5d, 0x5e, 0x67, 0x6b,
                                         0x6d, 0x6e, 0x73, 0x97, 0x9b, 0x9d, 0x9e, 0xa7, 0xab, 0xad,
                                         0xae, 0xc7, 0xcb, 0xce, 0xec, 0xf1, 0xf2, 0xf4, 0xf8};

constexpr int kPatterns = 256;

// The patterns as 2a (odd integers), in a fixed order: the 227 vectors with ||a||^2 <= 10
// (||2a||^2 <= 40) in lexicographic order of 2a, then the 29 masks above.
std::vector<std::array<int, 8>> patterns() {
  std::vector<std::array<int, 8>> out;
  std::array<int, 8> t{};
  for (int code = 0; code < (1 << 16); ++code) {  // each coordinate 2a_i in {1, 3, 5, 7}
    int sq = 0;
    for (int i = 0; i < 8; ++i) {
      t[size_t(i)] = 2 * ((code >> (2 * (7 - i))) & 3) + 1;
      sq += t[size_t(i)] * t[size_t(i)];
    }
    if (sq <= 40) out.push_back(t);
  }
  AQUAKV_CHECK(out.size() == 227, "E8P: 227 patterns of norm <= 10");
  for (uint8_t m : kE8pNorm12Masks) {
    for (int i = 0; i < 8; ++i) t[size_t(i)] = (m >> i) & 1 ? 3 : 1;
    out.push_back(t);
  }
  return out;
}

// One codebook point in quarter units (4p, odd integers) with its structural coordinates.
struct Entry {
  std::array<int8_t, 8> q;
  uint8_t shift;    // 0: sigma = +1/4, 1: sigma = -1/4
  uint8_t pattern;  // index into patterns()
  uint8_t signs;    // bit i set <=> s_i = -1
};

std::vector<Entry> entries() {
  const auto pats = patterns();
  std::vector<Entry> e;
  e.reserve(65536);
  for (int k = 0; k < kPatterns; ++k) {
    for (int sh = 0; sh < 2; ++sh) {
      for (int s = 0; s < 256; ++s) {
        Entry x{};
        int sum = 0;  // sum_i s_i 2a_i; sum_i s_i a_i even <=> sum = 0 (mod 4)
        for (int i = 0; i < 8; ++i) {
          const int h = (s >> i) & 1 ? -pats[size_t(k)][size_t(i)] : pats[size_t(k)][size_t(i)];
          sum += h;
          x.q[size_t(i)] = int8_t(2 * h + (sh == 0 ? 1 : -1));  // 4 (s_i a_i + sigma)
        }
        if (((sum % 4) + 4) % 4 != 0) continue;
        x.shift = uint8_t(sh);
        x.pattern = uint8_t(k);
        x.signs = uint8_t(s);
        e.push_back(x);
      }
    }
  }
  AQUAKV_CHECK(e.size() == 65536, "E8P: 256 patterns x 128 signs x 2 shifts");
  std::sort(e.begin(), e.end(), [](const Entry& a, const Entry& b) { return a.q < b.q; });
  return e;
}

// Sorts 8 floats into decreasing order without branches (Batcher's odd-even merge network,
// 19 compare-exchanges of max/min).
void sort8_decreasing(float* x) {
  auto cx = [x](int i, int j) {
    const float a = x[i], b = x[j];
    x[i] = std::max(a, b);
    x[j] = std::min(a, b);
  };
  cx(0, 1); cx(2, 3); cx(4, 5); cx(6, 7);
  cx(0, 2); cx(1, 3); cx(4, 6); cx(5, 7);
  cx(1, 2); cx(5, 6);
  cx(0, 4); cx(1, 5); cx(2, 6); cx(3, 7);
  cx(2, 4); cx(3, 5);
  cx(1, 2); cx(3, 4); cx(5, 6);
}

// Ranks listed candidate points the way nearest_brute_scalar does: by the float score
// 2 u . p - ||p||^2 summed in its order, highest first, the lowest index on ties. The index (a
// table read) is looked up only for a tie; a new best keeps its table row and signs until then.
class Ranker {
 public:
  explicit Ranker(const float* u) {
    for (int j = 0; j < 8; ++j) u2_[j] = 2.0f * u[j];
  }
  // p: the point (coordinates exact multiples of 1/4); row[signs]: its index.
  void offer(const float* p, const uint16_t* row, uint32_t signs) {
    float nrm = 0.0f;
    for (int j = 0; j < 8; ++j) nrm = nrm + p[j] * p[j];
    float s = -nrm;
    for (int j = 0; j < 8; ++j) s = s + u2_[j] * p[j];
    if (s > best_) {
      best_ = s;
      best_row_ = row;
      best_signs_ = signs;
      best_id_ = -1;
    } else if (s == best_) {
      if (best_id_ < 0) best_id_ = best_row_[best_signs_];
      const int32_t i = row[signs];
      if (i < best_id_) {
        best_id_ = i;
        best_row_ = row;
        best_signs_ = signs;
      }
    }
  }
  bool found() const { return best_row_ != nullptr; }
  uint16_t index() const { return uint16_t(best_id_ >= 0 ? best_id_ : best_row_[best_signs_]); }

 private:
  float u2_[8];
  float best_ = -std::numeric_limits<float>::infinity();
  int32_t best_id_ = -1;  // -1: not looked up yet
  const uint16_t* best_row_ = nullptr;
  uint32_t best_signs_ = 0;
};

// Far above the float rounding of any score here (see e8p.h); max ||p||^2 = 16.5.
float search_slack(double unorm) { return float(1e-4 * (1.0 + unorm + 16.5)); }

}  // namespace

const Grid& e8p_grid() {
  static const Grid g = [] {
    Grid r;
    r.name = "E8P";
    r.d = 8;
    r.n = 65536;
    r.points.reserve(size_t(65536 * 8));
    for (const Entry& x : entries()) {
      for (int8_t q : x.q) r.points.push_back(float(q) * 0.25f);
    }
    return r;
  }();
  return g;
}

bool is_e8p_grid(const Grid& g) { return g.d == 8 && g.n == 65536 && g.points == e8p_grid().points; }

E8pSearch::E8pSearch() {
  const auto pats = patterns();
  // Group the patterns by shape (their coordinates sorted in decreasing order), each group
  // padded to whole blocks of 8 slots; a padding slot has ||a||^2 = +inf, so it never wins.
  std::map<std::array<int, 8>, std::vector<int>, std::greater<>> groups;
  for (int k = 0; k < kPatterns; ++k) {
    auto key = pats[size_t(k)];
    std::sort(key.begin(), key.end(), std::greater<>());
    groups[key].push_back(k);
  }
  nslots_ = 0;
  for (const auto& [key, ks] : groups) nslots_ += int((ks.size() + 7) / 8 * 8);
  pat_.assign(size_t(8 * nslots_), 0.0f);
  pnorm_.assign(size_t(nslots_), std::numeric_limits<float>::infinity());
  ppar_.assign(size_t(nslots_), 0);
  slot_pattern_.assign(size_t(nslots_), -1);
  int slot = 0;
  for (const auto& [key, ks] : groups) {
    Shape sh{};
    int sq = 0;
    for (int i = 0; i < 8; ++i) {
      sh.a[i] = float(key[size_t(i)]) * 0.5f;
      sq += key[size_t(i)] * key[size_t(i)];
    }
    sh.norm = float(sq) * 0.25f;
    sh.slot0 = slot;
    for (int k : ks) {
      int sum = 0;
      for (int i = 0; i < 8; ++i) {
        pat_[size_t(i * nslots_ + slot)] = float(pats[size_t(k)][size_t(i)]) * 0.5f;
        sum += pats[size_t(k)][size_t(i)];
      }
      pnorm_[size_t(slot)] = sh.norm;
      ppar_[size_t(slot)] = (sum / 2) & 1;  // sum_i a_i mod 2 (sum of eight odd 2a_i is even)
      slot_pattern_[size_t(slot)] = k;
      ++slot;
    }
    slot = (slot + 7) / 8 * 8;
    sh.slot1 = slot;
    shapes_.push_back(sh);
  }
  AQUAKV_CHECK(slot == nslots_ && nslots_ <= kMaxSlots && int(shapes_.size()) <= kMaxShapes);
  pattern_of_key_.assign(6561, -1);
  for (int k = 0; k < kPatterns; ++k) {
    int key = 0, pow3 = 1;
    for (int i = 0; i < 8; ++i, pow3 *= 3) {
      const int t = (pats[size_t(k)][size_t(i)] - 1) / 2;  // 2a_i = 2t_i + 1
      AQUAKV_CHECK(t >= 0 && t <= 2, "E8P: pattern coordinates are 1/2, 3/2 or 5/2");
      key += t * pow3;
    }
    pattern_of_key_[size_t(key)] = int16_t(k);
  }
  index_.assign(size_t(2 * kPatterns * 256), 0);
  const auto e = entries();
  for (size_t i = 0; i < e.size(); ++i) {
    index_[size_t((e[i].shift * kPatterns + e[i].pattern) * 256 + e[i].signs)] = uint16_t(i);
  }
}

const E8pSearch& e8p_search() {
  static const E8pSearch s;
  return s;
}

namespace detail {

float e8p_pattern_dists_scalar(const float* pat, int64_t stride, const float* pnorm, const int32_t* ppar,
                               int64_t k0, int64_t k1, const float* av, float nv, int32_t negpar,
                               float* dist) {
  float lowest = std::numeric_limits<float>::infinity();
  for (int64_t k = k0; k < k1; ++k) {
    float t = 0.0f, m = std::numeric_limits<float>::infinity();
    for (int j = 0; j < 8; ++j) {
      const float c = av[j] * pat[j * stride + k];
      t = t + c;
      m = c < m ? c : m;
    }
    const float b = ppar[k] != negpar ? t - (m + m) : t;
    dist[k] = (nv - (b + b)) + pnorm[k];
    lowest = std::min(lowest, dist[k]);
  }
  return lowest;
}

uint64_t e8p_within_scalar(const float* dist, int64_t k0, int64_t k1, float lim) {
  uint64_t bits = 0;
  for (int64_t k = k0; k < k1; ++k) bits |= uint64_t(dist[k] <= lim) << (k - k0);
  return bits;
}

void e8p_cosets_scalar(const float* u, float* h, float* step, float* c, float* base, float* cmin, int32_t* par) {
  for (int sh = 0; sh < 2; ++sh) {
    const float sigma = sh == 0 ? 0.25f : -0.25f;
    float e2[8], m = std::numeric_limits<float>::infinity();
    int32_t odd = 0;
    for (int j = 0; j < 8; ++j) {
      const float v = u[j] - sigma;
      const float f = std::floor(v);
      odd ^= int32_t(f) & 1;
      const float hj = f + 0.5f;
      const float e = v - hj;  // exact: v and h are within 1 of each other
      h[8 * sh + j] = hj;
      step[8 * sh + j] = e >= 0.0f ? 1.0f : -1.0f;
      const float cj = 1.0f - 2.0f * std::fabs(e);
      c[8 * sh + j] = cj;
      m = cj < m ? cj : m;
      e2[j] = e * e;
    }
    float s4[4];
    for (int j = 0; j < 4; ++j) s4[j] = e2[j] + e2[j + 4];
    base[sh] = (s4[0] + s4[2]) + (s4[1] + s4[3]);
    cmin[sh] = m;
    par[sh] = odd;
  }
}

}  // namespace detail

namespace {
double query_norm(const float* u) {
  double unorm = 0;
  for (int j = 0; j < 8; ++j) unorm += double(u[j]) * u[j];
  return unorm;
}
}  // namespace

bool E8pSearch::search_one(const float* u, uint16_t* idx) const {
  const double unorm = query_norm(u);
  return decide_lattice(u, unorm, idx) || decide_patterns(u, unorm, idx);
}
bool E8pSearch::search_lattice(const float* u, uint16_t* idx) const { return decide_lattice(u, query_norm(u), idx); }
bool E8pSearch::search_patterns(const float* u, uint16_t* idx) const { return decide_patterns(u, query_norm(u), idx); }

bool E8pSearch::decide_lattice(const float* u, double unorm, uint16_t* idx) const {
  // Beyond ||u||^2 = 64 the nearest lattice point is far outside the codebook (max ||p||^2
  // 16.5); the bound also keeps every v_i small enough for exact half-integer rounding.
  if (!(unorm <= 64.0)) return false;
  const float slack = search_slack(unorm);
  // Per shift: h (nearest half-integers), the step directions and costs c_i = 1 - 2|e_i|,
  // base = ||e||^2, the parity P, and the coset minimum base + P min_i c_i.
  alignas(32) float h[16], step[16], c[16];
  float base[2], cmin[2], dmin[2];
  int32_t par[2];
  if (simd_at_least(SimdLevel::kAvx2)) {
    detail::e8p_cosets_avx2(u, h, step, c, base, cmin, par);
  } else {
    detail::e8p_cosets_scalar(u, h, step, c, base, cmin, par);
  }
  for (int sh = 0; sh < 2; ++sh) dmin[sh] = par[sh] ? base[sh] + cmin[sh] : base[sh];
  const float lim = std::min(dmin[0], dmin[1]) + slack;
  Ranker rank(u);
  for (int sh = 0; sh < 2; ++sh) {
    if (!(dmin[sh] <= lim)) continue;
    const float* hs = h + 8 * sh;
    const float* cs = c + 8 * sh;
    const float budget = lim - base[sh];
    if (!(budget < 0.99f)) return false;  // moves other than single steps could be within lim
    int ids[8], nf = 0;
    for (int j = 0; j < 8; ++j) {
      if (cs[j] <= budget) ids[nf++] = j;
    }
    const float sigma = sh == 0 ? 0.25f : -0.25f;
    for (uint32_t sub = 0; sub < (1u << nf); ++sub) {
      if (int32_t(__builtin_popcount(sub) & 1) != par[sh]) continue;
      float used = base[sh];
      float x[8];
      for (int j = 0; j < 8; ++j) x[j] = hs[j];
      for (int b = 0; b < nf; ++b) {
        if ((sub >> b) & 1) {
          used += cs[ids[b]];
          x[ids[b]] += step[8 * sh + ids[b]];
        }
      }
      if (!(used <= lim)) continue;
      // x's absolute pattern and signs; the point x + sigma.
      int key = 0, pow3 = 1;
      uint32_t signs = 0;
      float p[8];
      for (int j = 0; j < 8; ++j, pow3 *= 3) {
        const float a = std::fabs(x[j]);
        if (a > 2.5f) return false;  // no pattern has a coordinate above 5/2
        key += int(a - 0.5f) * pow3;
        if (x[j] < 0.0f) signs |= 1u << j;
        p[j] = x[j] + sigma;
      }
      const int pattern = pattern_of_key_[size_t(key)];
      if (pattern < 0) return false;  // a lattice point within lim outside the codebook
      rank.offer(p, index_.data() + size_t((sh * kPatterns + pattern) * 256), signs);
    }
  }
  if (!rank.found()) return false;
  *idx = rank.index();
  return true;
}

bool E8pSearch::decide_patterns(const float* u, double unorm, uint16_t* idx) const {
  if (!(unorm < 1e30)) return false;  // non-finite coordinates, or scores that could overflow
  const float slack = search_slack(unorm);
  const bool avx2 = simd_at_least(SimdLevel::kAvx2);
  alignas(32) float dist[2][kMaxSlots];
  float av[2][8], nv[2];
  uint32_t negmask[2];
  int32_t negpar[2];
  // Shape bounds: for every arrangement a of a shape, sum_i |v_i| a_i <= sum_i |v|_(i) a_(i)
  // (both sorted decreasingly: the rearrangement inequality), so
  //   lb = ||v||^2 - 2 sum_i |v|_(i) a_(i) + ||a||^2 <= D_a  for each pattern a of the shape.
  struct Bound {
    float lb;
    int sh, shape;
  };
  Bound bounds[2 * kMaxShapes];
  int nb = 0;
  for (int sh = 0; sh < 2; ++sh) {
    const float sigma = sh == 0 ? 0.25f : -0.25f;
    nv[sh] = 0.0f;
    negmask[sh] = 0;
    float sv[8];
    for (int j = 0; j < 8; ++j) {
      const float v = u[j] - sigma;
      av[sh][j] = std::fabs(v);
      sv[j] = av[sh][j];
      nv[sh] = nv[sh] + v * v;
      if (v < 0.0f) negmask[sh] |= 1u << j;
    }
    negpar[sh] = int32_t(__builtin_popcount(negmask[sh]) & 1);
    sort8_decreasing(sv);
    for (int q = 0; q < int(shapes_.size()); ++q) {
      float t = 0.0f;
      for (int j = 0; j < 8; ++j) t = t + sv[j] * shapes_[size_t(q)].a[j];
      bounds[nb++] = {(nv[sh] - (t + t)) + shapes_[size_t(q)].norm, sh, q};
    }
  }
  int lowest = 0;
  for (int b = 1; b < nb; ++b) lowest = bounds[b].lb < bounds[lowest].lb ? b : lowest;
  std::swap(bounds[0], bounds[lowest]);
  // Evaluate the shape of lowest bound, then every other whose bound is within the best D_a so
  // far plus the slack (the best only decreases, so a shape skipped is beyond the final one).
  float dstar = std::numeric_limits<float>::infinity();
  int evaluated[2 * kMaxShapes];
  int nev = 0;
  for (int e = 0; e < nb; ++e) {
    const Bound& bd = bounds[e];
    if (bd.lb > dstar + slack) continue;
    evaluated[nev++] = e;
    const Shape& q = shapes_[size_t(bd.shape)];
    float* d = dist[bd.sh];
    const float lowest = avx2 ? detail::e8p_pattern_dists_avx2(pat_.data(), nslots_, pnorm_.data(), ppar_.data(), q.slot0,
                                                               q.slot1, av[bd.sh], nv[bd.sh], negpar[bd.sh], d)
                              : detail::e8p_pattern_dists_scalar(pat_.data(), nslots_, pnorm_.data(), ppar_.data(), q.slot0,
                                                                 q.slot1, av[bd.sh], nv[bd.sh], negpar[bd.sh], d);
    dstar = std::min(dstar, lowest);
  }
  const float lim = dstar + slack;
  Ranker rank(u);
  // Every point of slot k (shift sh) within lim, ranked by the brute force's float score.
  auto visit_slot = [&](int sh, int k) {
    const float sigma = sh == 0 ? 0.25f : -0.25f;
    // d0 = the distance at s0 (same float steps as the pass); flipping coordinate i adds
    // cost_i = 4 c_i. Only coordinates with cost_i <= lim - d0 can be in a flip set within lim:
    // enumerate the subsets of those (almost always none or one).
    float cost[8], t = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const float c = av[sh][j] * pat_[size_t(j * nslots_ + k)];
      t = t + c;
      cost[j] = 4.0f * c;
    }
    const float d0 = (nv[sh] - (t + t)) + pnorm_[size_t(k)];
    int ids[8], nf = 0;
    for (int j = 0; j < 8; ++j) {
      if (d0 + cost[j] <= lim) ids[nf++] = j;
    }
    const uint32_t need = ppar_[size_t(k)] != negpar[sh] ? 1 : 0;  // parity of the number of flips
    const uint16_t* row = index_.data() + size_t((sh * kPatterns + slot_pattern_[size_t(k)]) * 256);
    for (uint32_t sub = 0; sub < (1u << nf); ++sub) {
      if ((uint32_t(__builtin_popcount(sub)) & 1) != need) continue;
      float used = d0;
      uint32_t flips = 0;
      for (int b = 0; b < nf; ++b) {
        if ((sub >> b) & 1) {
          used += cost[ids[b]];
          flips |= 1u << ids[b];
        }
      }
      if (!(used <= lim)) continue;
      // The point s (.) a + sigma (coordinates exact multiples of 1/4).
      const uint32_t signs = negmask[sh] ^ flips;
      float p[8];
      for (int j = 0; j < 8; ++j) {
        const float a = pat_[size_t(j * nslots_ + k)];
        p[j] = ((signs >> j) & 1 ? -a : a) + sigma;
      }
      rank.offer(p, row, signs);
    }
  };
  for (int e = 0; e < nev; ++e) {
    const int sh = bounds[evaluated[e]].sh;
    const Shape& q = shapes_[size_t(bounds[evaluated[e]].shape)];
    // The slots within lim as bits, 64 at a time (a branch per slot mispredicts).
    for (int k0 = q.slot0; k0 < q.slot1; k0 += 64) {
      const int k1 = std::min(k0 + 64, q.slot1);
      uint64_t bits = avx2 ? detail::e8p_within_avx2(dist[sh], k0, k1, lim) : detail::e8p_within_scalar(dist[sh], k0, k1, lim);
      for (; bits != 0; bits &= bits - 1) visit_slot(sh, k0 + __builtin_ctzll(bits));
    }
  }
  AQUAKV_CHECK(rank.found(), "E8P search found no candidate");
  *idx = rank.index();
  return true;
}

}  // namespace aquakv
