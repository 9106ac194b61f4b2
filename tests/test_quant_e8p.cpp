// Tests of quant/e8p.h: the codebook built from its lattice description equals the published
// E8P file bit for bit (and a checked-in checksum without the file), its points satisfy the
// structure the search relies on (checked in integer arithmetic), the structured search returns
// the scalar brute force's index on Gaussian, scaled, on-grid, midpoint and exact-tie queries,
// the AVX2 pattern pass equals the scalar one bit for bit, and the HIGGS codec on E8P.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "aquakv/quant/codec.h"
#include "aquakv/quant/e8p.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/quant/grid.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/quant/nearest.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

const std::string kRef = std::string(std::getenv("AQUAKV_SHARED_DIR") ? std::getenv("AQUAKV_SHARED_DIR") : AQUAKV_SHARED_DIR) +
                         "/reference/grids/QUIPSHARP8-65536.n65536xd8.f32le";

struct SimdGuard {
  SimdLevel saved = simd_level();
  ~SimdGuard() { set_simd_level(saved); }
};

std::vector<SimdLevel> levels() {
  std::vector<SimdLevel> v{SimdLevel::kScalar};
  if (cpu_simd_level() >= SimdLevel::kAvx2) v.push_back(SimdLevel::kAvx2);
  return v;
}

TEST(E8p, EqualsThePublishedCodebook) {
  const Grid& g = e8p_grid();
  ASSERT_EQ(g.d, 8);
  ASSERT_EQ(g.n, 65536);
  // fnv1a64 of the 2 MiB of little-endian float32 (the published file's bytes on this
  // little-endian target), so the check runs without ../shared too.
  EXPECT_EQ(fnv1a64(g.points.data(), int64_t(g.points.size() * 4)), 0x62c94d09ff477825ull);
  EXPECT_EQ(&builtin_grid(8, 65536), &g);
  if (!std::filesystem::exists(kRef)) GTEST_SKIP() << "no reference grid " << kRef;
  const Grid f = load_grid_file(kRef);
  EXPECT_EQ(f.points, g.points);
  EXPECT_TRUE(is_e8p_grid(f));
  Grid h = f;
  h.points[12345] = -h.points[12345];
  EXPECT_FALSE(is_e8p_grid(h));
}

TEST(E8p, PointsLieInEightPlusAQuarterAndAreSortedAndDistinct) {
  // In quarter units q = 4p: p - 1/4 in E8 <=> (q - 1)/4 is all-integer or all-half-integer
  // with an even sum. Checked without the construction's terms (patterns, signs).
  const Grid& g = e8p_grid();
  std::set<std::vector<int>> seen;
  std::vector<int> prev;
  for (int64_t i = 0; i < g.n; ++i) {
    std::vector<int> q(8);
    for (int j = 0; j < 8; ++j) {
      const float t = g.point(i)[j] * 4.0f;
      q[size_t(j)] = int(t);
      ASSERT_EQ(float(q[size_t(j)]), t) << i;
    }
    int sum2 = 0;  // sum of 2 (p - 1/4) = sum of (q - 1) / 2
    int kind = -1;
    for (int j = 0; j < 8; ++j) {
      const int e = q[size_t(j)] - 1;  // 4 (p - 1/4)
      ASSERT_EQ(e % 2, 0) << i;
      const int h = e / 2;  // 2 (p_j - 1/4)
      const int k = ((h % 2) + 2) % 2;
      if (kind < 0) kind = k;
      ASSERT_EQ(k, kind) << "point " << i << ": mixed integer and half-integer coordinates";
      sum2 += h;
    }
    ASSERT_EQ(((sum2 % 4) + 4) % 4, 0) << "point " << i << ": odd coordinate sum";
    if (i > 0) {
      ASSERT_LT(prev, q) << "not in lexicographic order at " << i;
    }
    prev = q;
    seen.insert(q);
  }
  EXPECT_EQ(seen.size(), 65536u);
}

// Queries of every kind the search must get right, ties included.
std::vector<float> e8p_queries(int64_t m, uint64_t seed) {
  const Grid& g = e8p_grid();
  GaussRng rng(seed);
  std::vector<float> u(size_t(m * 8));
  for (int64_t i = 0; i < m; ++i) {
    float* q = u.data() + i * 8;
    const int kind = int(i % 8);
    const int64_t a = int64_t(rng.next_u64() % 65536), b = int64_t(rng.next_u64() % 65536);
    const uint64_t c = rng.next_u64();
    for (int j = 0; j < 8; ++j) {
      switch (kind) {
        case 0: case 1: case 2: q[j] = float(rng.normal()); break;  // N(0, I): the use
        case 3: q[j] = float(2.5 * rng.normal()); break;            // mostly outside the codebook
        case 4: q[j] = g.point(a)[j]; break;                        // on a point
        case 5: q[j] = 0.5f * (g.point(a)[j] + g.point(b)[j]); break;  // exact ties, often
        case 6: q[j] = float(g.point(a)[j] + 1e-6 * rng.normal()); break;
        default: {
          // Half-way along a minimal vector w of E8 (norm^2 2: +-1 in two coordinates, or +-1/2
          // in all eight with an even number of minus signs) from a point: on the facet between
          // p and p + w (both in the codebook, often), nudged by ~1e-7 so that the two distances
          // differ by about their float rounding.
          const int i0 = int(c % 8), i1 = int((c / 8) % 7 + i0 + 1) % 8;
          float w;
          if ((c >> 20) & 1) {
            w = (j == i0 || j == i1) ? ((c >> (24 + j)) & 1 ? 1.0f : -1.0f) : 0.0f;
          } else {
            const bool minus = j < 7 ? ((c >> (8 + j)) & 1) : (__builtin_popcountll((c >> 8) & 127) & 1);
            w = minus ? -0.5f : 0.5f;
          }
          q[j] = float(g.point(a)[j] + 0.5 * w + 2e-7 * rng.normal());
        }
      }
    }
  }
  // Special queries: the origin, the shifts themselves (all 128 sign choices tie), huge values.
  for (int j = 0; j < 8; ++j) {
    u[size_t(j)] = 0.0f;
    u[size_t(8 + j)] = 0.25f;
    u[size_t(16 + j)] = -0.25f;
    u[size_t(24 + j)] = j == 3 ? 1e6f : 0.0f;
  }
  return u;
}

TEST(E8p, SearchEqualsScalarBruteForce) {
  const Grid& g = e8p_grid();
  const E8pSearch& s = e8p_search();
  const int64_t m = 2400;
  const auto u = e8p_queries(m, 5);
  std::vector<int64_t> want(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) want[size_t(i)] = nearest_brute_scalar(g, u.data() + i * 8);
  for (SimdLevel lvl : levels()) {
    SimdGuard guard;
    set_simd_level(lvl);
    for (int64_t i = 0; i < m; ++i) {
      uint16_t got = 0;
      ASSERT_TRUE(s.search_one(u.data() + i * 8, &got));
      ASSERT_EQ(got, want[size_t(i)]) << "query " << i << " kind " << i % 8 << " simd " << int(lvl);
    }
  }
}

TEST(E8p, SearchEqualsBruteForceOnManyGaussians) {
  // The blocked brute force (itself checked against the scalar one in test_quant_grid) over
  // 65536 points, on 40000 N(0, I) queries and the tie-heavy kinds above.
  const Grid& g = e8p_grid();
  const NearestSearch ns(g);
  const int64_t m = 40000;
  GaussRng rng(9);
  std::vector<float> u(size_t(m * 8));
  for (auto& v : u) v = float(rng.normal());
  const auto t = e8p_queries(4000, 6);
  u.insert(u.end(), t.begin(), t.end());
  const int64_t total = int64_t(u.size()) / 8;
  std::vector<uint16_t> got(static_cast<size_t>(total)), brute(static_cast<size_t>(total));
  SimdGuard guard;
  set_simd_level(cpu_simd_level());
  ns.search_brute(u.data(), total, brute.data());
  for (SimdLevel lvl : levels()) {
    set_simd_level(lvl);
    ns.search(u.data(), total, got.data());
    for (int64_t i = 0; i < total; ++i) ASSERT_EQ(got[size_t(i)], brute[size_t(i)]) << "query " << i << " simd " << int(lvl);
  }
}

TEST(E8p, NonFiniteQueriesTakeTheBruteForce) {
  const Grid& g = e8p_grid();
  const NearestSearch ns(g);
  const float nan = std::nanf(""), inf = INFINITY;
  for (float bad : {nan, inf, -inf, 3e37f}) {
    float u[8] = {0.1f, 0.2f, bad, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    uint16_t a = 1, b = 2;
    ns.search(u, 1, &a);
    ns.search_brute(u, 1, &b);
    EXPECT_EQ(a, b) << bad;
    EXPECT_EQ(int64_t(a), nearest_brute_scalar(g, u)) << bad;
  }
}

TEST(E8p, Avx2PatternPassEqualsScalar) {
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2";
  // Random patterns, norms and parities (not only E8P's) and random |v|.
  GaussRng rng(3);
  std::vector<float> pat(8 * 256), pnorm(256);
  std::vector<int32_t> ppar(256);
  for (int rep = 0; rep < 200; ++rep) {
    for (auto& v : pat) v = float(std::fabs(rng.normal()) * 2);
    for (auto& v : pnorm) v = float(rng.uniform() * 16);
    for (auto& v : ppar) v = int32_t(rng.next_u64() & 1);
    float av[8];
    float nv = 0;
    for (float& v : av) {
      v = float(std::fabs(rng.normal()) * (rep % 3 == 0 ? 10 : 1));
      nv += v * v;
    }
    for (int32_t negpar : {0, 1}) {
      float a[256], b[256];
      const int k0 = 8 * (rep % 4), k1 = 256 - 8 * (rep % 5);
      const float ma = detail::e8p_pattern_dists_scalar(pat.data(), 256, pnorm.data(), ppar.data(), k0, k1, av, nv, negpar, a);
      const float mb = detail::e8p_pattern_dists_avx2(pat.data(), 256, pnorm.data(), ppar.data(), k0, k1, av, nv, negpar, b);
      float m = INFINITY;
      for (int k = k0; k < k1; ++k) {
        ASSERT_EQ(std::bit_cast<uint32_t>(a[k]), std::bit_cast<uint32_t>(b[k])) << k;
        m = std::min(m, a[k]);
      }
      EXPECT_EQ(ma, m);
      EXPECT_EQ(mb, m);
      // The slots within a limit: 64 at a time, and ragged ends.
      for (const float lim : {a[k0 + 3], a[k1 - 1], m}) {
        for (int64_t s0 = k0; s0 < k1; s0 += 64 - 3 * (rep % 3)) {
          const int64_t s1 = std::min<int64_t>(s0 + 64 - 3 * (rep % 3), k1);
          uint64_t want = 0;
          for (int64_t k = s0; k < s1; ++k) want |= uint64_t(a[k] <= lim) << (k - s0);
          ASSERT_EQ(detail::e8p_within_scalar(a, s0, s1, lim), want);
          ASSERT_EQ(detail::e8p_within_avx2(a, s0, s1, lim), want);
        }
      }
    }
  }
}

TEST(E8p, GridMseMeetsTheTarget) {
  // aquakv-algorithm.md section 5: E8P ~0.090 per coordinate (-log4 = 1.74 equivalent bits).
  const double mse = grid_mse(e8p_grid(), int64_t(1) << 17, 31);
  EXPECT_NEAR(mse / 0.090, 1.0, 0.03) << mse;
}

TEST(E8p, HiggsCodecUsesTheBuiltInCodebook) {
  const auto c = make_codec("higgs:8x65536:g192", 192);
  EXPECT_EQ(c->spec(), "higgs:8x65536:g192");
  EXPECT_NEAR(c->bits_per_value(), 2.0 + 16.0 / 192, 1e-12);
  // The codec's search is the shared one for the codebook: a second codec holds no new tables.
  const auto* h = dynamic_cast<const HiggsCodec*>(c.get());
  ASSERT_NE(h, nullptr);
  EXPECT_TRUE(is_e8p_grid(h->grid()));
  const auto c2 = make_codec("higgs:8x65536:g64", 192);
  EXPECT_EQ(&dynamic_cast<const HiggsCodec*>(c2.get())->grid(), &h->grid());
  EXPECT_EQ(shared_nearest_search(e8p_grid()).get(), shared_nearest_search(e8p_grid()).get());
}


TEST(E8p, LatticeDecoderIsExactWhereItDecidesAndDecidesMost) {
  // Where the lattice decoder answers it must be the brute force's index (tie-heavy kinds
  // included); on N(0, I) queries -- the codec's use -- it must decide most, or the pattern
  // search carries the cost again.
  const Grid& g = e8p_grid();
  const E8pSearch& s = e8p_search();
  const auto u = e8p_queries(4000, 11);
  const int64_t m = int64_t(u.size()) / 8;
  int64_t decided = 0, gauss = 0, gauss_decided = 0;
  for (int64_t i = 0; i < m; ++i) {
    uint16_t got = 0;
    const bool ok = s.search_lattice(u.data() + i * 8, &got);
    if (ok) {
      ++decided;
      ASSERT_EQ(int64_t(got), nearest_brute_scalar(g, u.data() + i * 8)) << "query " << i << " kind " << i % 8;
    }
    if (i >= 4 && i % 8 <= 2) {
      ++gauss;
      gauss_decided += ok ? 1 : 0;
    }
  }
  EXPECT_GT(decided, 0);
  EXPECT_GE(double(gauss_decided) / double(gauss), 0.65) << gauss_decided << " of " << gauss;
  // Far outside the codebook and non-finite: never decided here.
  const float far[8] = {9, 0, 0, 0, 0, 0, 0, 0};
  const float nan[8] = {std::nanf(""), 0, 0, 0, 0, 0, 0, 0};
  uint16_t idx = 7;
  EXPECT_FALSE(s.search_lattice(far, &idx));
  EXPECT_FALSE(s.search_lattice(nan, &idx));
  EXPECT_EQ(idx, 7);
}

TEST(E8p, Avx2CosetRoundingEqualsScalar) {
  if (cpu_simd_level() < SimdLevel::kAvx2) GTEST_SKIP() << "no AVX2";
  GaussRng rng(21);
  const auto ties = e8p_queries(800, 22);
  for (int64_t i = 0; i < 3000; ++i) {
    float u[8];
    for (int j = 0; j < 8; ++j) {
      // Gaussians, the tie-heavy kinds, and exact half-integers / quarter points.
      u[j] = i < 1000 ? float(rng.normal()) : i < 2000 ? std::max(-8.0f, std::min(8.0f, ties[size_t(((i - 1000) % 800) * 8 + j)]))
                                         : float(int64_t(rng.next_u64() % 64) - 32) * 0.25f;
    }
    float h[2][16], st[2][16], c[2][16], base[2][2], cmin[2][2];
    int32_t par[2][2];
    detail::e8p_cosets_scalar(u, h[0], st[0], c[0], base[0], cmin[0], par[0]);
    detail::e8p_cosets_avx2(u, h[1], st[1], c[1], base[1], cmin[1], par[1]);
    ASSERT_EQ(0, std::memcmp(h[0], h[1], sizeof(h[0]))) << i;
    ASSERT_EQ(0, std::memcmp(st[0], st[1], sizeof(st[0]))) << i;
    ASSERT_EQ(0, std::memcmp(c[0], c[1], sizeof(c[0]))) << i;
    ASSERT_EQ(0, std::memcmp(base[0], base[1], sizeof(base[0]))) << i;
    ASSERT_EQ(0, std::memcmp(cmin[0], cmin[1], sizeof(cmin[0]))) << i;
    ASSERT_EQ(0, std::memcmp(par[0], par[1], sizeof(par[0]))) << i;
  }
}

}  // namespace
}  // namespace aquakv
