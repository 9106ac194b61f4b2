// The E8P codebook and its structured exact search (the math is in quant/e8p.h).
#include "aquakv/quant/e8p.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
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
  pat_.resize(size_t(8 * kPatterns));
  pnorm_.resize(size_t(kPatterns));
  ppar_.resize(size_t(kPatterns));
  for (int k = 0; k < kPatterns; ++k) {
    int sq = 0, sum = 0;
    for (int i = 0; i < 8; ++i) {
      const int t = pats[size_t(k)][size_t(i)];
      pat_[size_t(i * kPatterns + k)] = float(t) * 0.5f;
      sq += t * t;
      sum += t;
    }
    pnorm_[size_t(k)] = float(sq) * 0.25f;
    ppar_[size_t(k)] = (sum / 2) & 1;  // sum_i a_i mod 2 (sum of eight odd 2a_i is even)
  }
  index_.assign(size_t(2 * kPatterns * 256), 0);
  const auto e = entries();
  for (size_t i = 0; i < e.size(); ++i) {
    index_[size_t((e[i].shift * kPatterns + e[i].pattern) * 256 + e[i].signs)] = uint16_t(i);
  }
  const Grid& g = e8p_grid();
  negnorm_.resize(65536);
  for (int64_t i = 0; i < 65536; ++i) {
    float nrm = 0.0f;  // as nearest_brute_scalar sums it
    for (int j = 0; j < 8; ++j) nrm = nrm + g.point(i)[j] * g.point(i)[j];
    negnorm_[size_t(i)] = -nrm;
  }
}

const E8pSearch& e8p_search() {
  static const E8pSearch s;
  return s;
}

namespace detail {

void e8p_pattern_dists_scalar(const float* pat, const float* pnorm, const int32_t* ppar,
                              const float* av, float nv, int32_t negpar, float* dist) {
  for (int k = 0; k < kPatterns; ++k) {
    float t = 0.0f, m = std::numeric_limits<float>::infinity();
    for (int j = 0; j < 8; ++j) {
      const float c = av[j] * pat[j * kPatterns + k];
      t = t + c;
      m = c < m ? c : m;
    }
    const float b = ppar[k] != negpar ? t - (m + m) : t;
    dist[k] = (nv - (b + b)) + pnorm[k];
  }
}

}  // namespace detail

bool E8pSearch::search_one(const float* u, uint16_t* idx) const {
  double unorm = 0;
  for (int j = 0; j < 8; ++j) unorm += double(u[j]) * u[j];
  if (!(unorm < 1e30)) return false;  // non-finite coordinates, or scores that could overflow
  // Far above the float rounding of any score here (see e8p.h); max ||p||^2 = 16.5.
  const float slack = float(1e-4 * (1.0 + unorm + 16.5));
  const bool avx2 = simd_at_least(SimdLevel::kAvx2);
  alignas(32) float dist[2][kPatterns];
  float av[2][8], nv[2];
  uint32_t negmask[2];
  float dstar = std::numeric_limits<float>::infinity();
  for (int sh = 0; sh < 2; ++sh) {
    const float sigma = sh == 0 ? 0.25f : -0.25f;
    nv[sh] = 0.0f;
    negmask[sh] = 0;
    for (int j = 0; j < 8; ++j) {
      const float v = u[j] - sigma;
      av[sh][j] = std::fabs(v);
      nv[sh] = nv[sh] + v * v;
      if (v < 0.0f) negmask[sh] |= 1u << j;
    }
    const int32_t negpar = int32_t(__builtin_popcount(negmask[sh]) & 1);
    if (avx2) {
      detail::e8p_pattern_dists_avx2(pat_.data(), pnorm_.data(), ppar_.data(), av[sh], nv[sh], negpar, dist[sh]);
    } else {
      detail::e8p_pattern_dists_scalar(pat_.data(), pnorm_.data(), ppar_.data(), av[sh], nv[sh], negpar, dist[sh]);
    }
    for (int k = 0; k < kPatterns; ++k) dstar = std::min(dstar, dist[sh][k]);
  }
  const float lim = dstar + slack;
  const float* pts = e8p_grid().points.data();
  float u2[8];
  for (int j = 0; j < 8; ++j) u2[j] = 2.0f * u[j];
  float best = -std::numeric_limits<float>::infinity();
  int32_t best_id = std::numeric_limits<int32_t>::max();
  // Ranks point i by the brute force's float score; first index on ties.
  auto consider = [&](int32_t i) {
    const float* p = pts + int64_t(i) * 8;
    float s = negnorm_[size_t(i)];
    for (int j = 0; j < 8; ++j) s = s + u2[j] * p[j];
    if (s > best || (s == best && i < best_id)) {
      best = s;
      best_id = i;
    }
  };
  for (int sh = 0; sh < 2; ++sh) {
    const int32_t negpar = int32_t(__builtin_popcount(negmask[sh]) & 1);
    for (int k = 0; k < kPatterns; ++k) {
      if (!(dist[sh][k] <= lim)) continue;
      // Flip costs 4 c_i sorted ascending; d0 = the distance at s0 (same float steps as the pass).
      float cost[8];
      int id[8];
      float t = 0.0f;
      for (int j = 0; j < 8; ++j) {
        const float c = av[sh][j] * pat_[size_t(j * kPatterns + k)];
        t = t + c;
        cost[j] = 4.0f * c;
        id[j] = j;
      }
      const float d0 = (nv[sh] - (t + t)) + pnorm_[size_t(k)];
      for (int a = 1; a < 8; ++a) {  // insertion sort of 8
        for (int b = a; b > 0 && cost[b] < cost[b - 1]; --b) {
          std::swap(cost[b], cost[b - 1]);
          std::swap(id[b], id[b - 1]);
        }
      }
      const int need = ppar_[size_t(k)] != negpar ? 1 : 0;  // parity of the number of flips
      const uint16_t* row = index_.data() + size_t((sh * kPatterns + k) * 256);
      // Depth-first over flip sets in ascending cost order; a set is extended only by later
      // (costlier) coordinates, and a branch stops at the first that exceeds the budget.
      struct Frame {
        int start;
        float used;
        int count;
        uint32_t flips;
      };
      Frame stack[40];  // at most 8 + 7 + ... + 1 pending siblings
      int top = 0;
      stack[top++] = {0, d0, 0, 0};
      while (top > 0) {
        const Frame f = stack[--top];
        if ((f.count & 1) == need) consider(row[negmask[sh] ^ f.flips]);
        for (int i = 7; i >= f.start; --i) {  // pushed in reverse: visited cheapest first
          const float used = f.used + cost[i];
          if (used <= lim) stack[top++] = {i + 1, used, f.count + 1, f.flips | (1u << id[i])};
        }
      }
    }
  }
  AQUAKV_CHECK(best_id != std::numeric_limits<int32_t>::max(), "E8P search found no candidate");
  *idx = uint16_t(best_id);
  return true;
}

}  // namespace aquakv
