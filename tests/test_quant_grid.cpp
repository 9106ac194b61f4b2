// Tests of quant/grid.h and quant/nearest.h: grid files (good, short, corrupt), the reference
// grids' and the built-in grids' MSE against the published targets, a full small CLVQ run, and
// exactness of every nearest-point search against the scalar brute-force definition.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <random>

#include <fmt/format.h>

#include "aquakv/quant/codec.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/quant/grid.h"
#include "aquakv/quant/nearest.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// AQUAKV_SHARED_DIR in the environment overrides the compiled-in location (worktrees).
const std::string kRef = std::string(std::getenv("AQUAKV_SHARED_DIR") ? std::getenv("AQUAKV_SHARED_DIR") : AQUAKV_SHARED_DIR) + "/reference/grids/";

struct SimdGuard {
  SimdLevel saved = simd_level();
  ~SimdGuard() { set_simd_level(saved); }
};

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("aquakv_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(b.data(), std::streamsize(b.size()));
}

bool have_reference() { return std::filesystem::exists(kRef + "EDEN2-16.n16xd2.f32le"); }

// Independent MSE estimate in double with the scalar brute-force search.
double mse_reference(const Grid& g, int64_t samples, uint64_t seed) {
  GaussRng rng(seed);
  std::vector<float> u(size_t(g.d));
  double err = 0;
  for (int64_t s = 0; s < samples; ++s) {
    for (auto& v : u) v = float(rng.normal());
    const int64_t k = nearest_brute_scalar(g, u.data());
    for (int j = 0; j < g.d; ++j) {
      const double e = double(u[size_t(j)]) - g.point(k)[j];
      err += e * e;
    }
  }
  return err / double(samples * g.d);
}

TEST(GridFile, SaveLoadRoundTrip) {
  Grid g;
  g.d = 2;
  g.n = 3;
  g.points = {1.5f, -2.0f, 0.0f, 3.25f, -0.125f, 7.0f};
  const std::string p = tmp_path("rt.n3xd2.f32le");
  save_grid_file(g, p);
  EXPECT_EQ(std::filesystem::file_size(p), 24u);
  const Grid h = load_grid_file(p);
  EXPECT_EQ(h.d, 2);
  EXPECT_EQ(h.n, 3);
  EXPECT_EQ(h.points, g.points);
  std::filesystem::remove(p);
}

TEST(GridFile, RejectsShortCorruptAndMisnamedFiles) {
  const std::string shortf = tmp_path("short.n16xd2.f32le");
  write_bytes(shortf, std::vector<char>(100, 0));
  EXPECT_THROW(load_grid_file(shortf), Error);
  try {
    load_grid_file(shortf);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected 128 bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("got 100"), std::string::npos) << e.what();
  }
  std::filesystem::remove(shortf);
  const std::string nanf = tmp_path("nan.n2xd1.f32le");
  const float vals[2] = {1.0f, NAN};
  std::vector<char> b(8);
  std::memcpy(b.data(), vals, 8);
  write_bytes(nanf, b);
  EXPECT_THROW(load_grid_file(nanf), Error);
  std::filesystem::remove(nanf);
  EXPECT_THROW(load_grid_file(tmp_path("missing.n2xd1.f32le")), Error);
  EXPECT_THROW(load_grid_file(tmp_path("noshape.f32le")), Error);
  EXPECT_THROW(load_grid_file(tmp_path("big.n70000xd2.f32le")), Error);
  EXPECT_THROW(load_grid_file(tmp_path("x.n16xd2.f32le"), 2, 70000), Error);
  EXPECT_THROW(load_grid_file(tmp_path("x.n16xd2.f32le"), 0, 16), Error);
}

struct Target {
  const char* file;
  int d;
  int64_t n;
  double mse;
};
const Target kTargets[] = {{"EDEN2-16.n16xd2.f32le", 2, 16, 0.1077},
                           {"EDEN2-64.n64xd2.f32le", 2, 64, 0.0295},
                           {"EDEN2-256.n256xd2.f32le", 2, 256, 0.00776},
                           {"EDEN4-256.n256xd4.f32le", 4, 256, 0.0970}};

TEST(GridMse, ReferenceGridsMeetPublishedMse) {
  if (!have_reference()) GTEST_SKIP() << "no reference grids under " << kRef;
  for (const auto& t : kTargets) {
    const Grid g = load_grid_file(kRef + t.file);
    const double mse = grid_mse(g, int64_t(1) << 19, 11);
    EXPECT_NEAR(mse / t.mse, 1.0, 0.02) << t.file << " mse " << mse;
  }
}

TEST(GridMse, BuiltInGridsMeetPublishedMse) {
  // The grids compiled into aquakv (made by aquakv's CLVQ generator) on fresh samples; within
  // 2% of the published numbers (sampling error at 2^19 x d samples is ~0.2%).
  for (const auto& t : kTargets) {
    const Grid& g = builtin_grid(t.d, t.n);
    const double mse = grid_mse(g, int64_t(1) << 19, 12);
    EXPECT_NEAR(mse / t.mse, 1.0, 0.02) << g.name << " mse " << mse;
  }
}

TEST(GridMse, BuiltInScalarGridsMatchLloydMax) {
  // Lloyd-Max quantizers of N(0,1): 1..4 bits (Max 1960 tables).
  const double lloyd_max[] = {0.3634, 0.1175, 0.03455, 0.009497};
  for (int b = 1; b <= 4; ++b) {
    const Grid& g = builtin_grid(1, int64_t(1) << b);
    EXPECT_NEAR(grid_mse(g, int64_t(1) << 19, 13) / lloyd_max[b - 1], 1.0, 0.02) << g.name;
  }
}

TEST(GridMse, FastMseEqualsScalarReference) {
  const Grid& g = builtin_grid(2, 16);
  // Same statistic, different samples: both are 2^16-sample estimates of one number.
  EXPECT_NEAR(grid_mse(g, int64_t(1) << 16, 5) / mse_reference(g, int64_t(1) << 16, 6), 1.0, 0.03);
}

TEST(GridGenerator, SmallGridReachesTargetAndIsDeterministic) {
  ClvqOptions o;
  o.seed = 3;
  o.iterations = 60;
  o.samples = int64_t(1) << 15;
  o.final_samples = int64_t(1) << 19;
  o.restarts = 3;
  const Grid a = generate_grid_clvq(2, 16, o);
  const double mse = grid_mse(a, int64_t(1) << 19, 21);
  EXPECT_NEAR(mse / 0.1077, 1.0, 0.02) << "mse " << mse;
  const Grid b = generate_grid_clvq(2, 16, o);
  EXPECT_EQ(a.points, b.points);
}

TEST(GridGenerator, RejectsBadParameters) {
  ClvqOptions o;
  EXPECT_THROW(generate_grid_clvq(0, 16, o), Error);
  EXPECT_THROW(generate_grid_clvq(2, 65537, o), Error);
  EXPECT_THROW(generate_grid_clvq(2, 1, o), Error);
  o.restarts = 0;
  EXPECT_THROW(generate_grid_clvq(2, 16, o), Error);
}

TEST(BuiltinGrid, UnknownShapeIsAnError) {
  EXPECT_THROW(builtin_grid(3, 16), Error);
  EXPECT_FALSE(builtin_grid_shapes().empty());
}

// Queries: fresh normals, scaled normals, grid points themselves and midpoints of point pairs
// (exact and near ties).
std::vector<float> queries(const Grid& g, int64_t m, uint64_t seed) {
  GaussRng rng(seed);
  std::vector<float> u(size_t(m * g.d));
  for (int64_t i = 0; i < m; ++i) {
    float* q = u.data() + i * g.d;
    const int kind = int(i % 4);
    const int64_t a = int64_t(rng.next_u64() % uint64_t(g.n)), b = int64_t(rng.next_u64() % uint64_t(g.n));
    for (int j = 0; j < g.d; ++j) {
      if (kind == 0) q[j] = float(rng.normal());
      if (kind == 1) q[j] = float(3.0 * rng.normal());
      if (kind == 2) q[j] = g.point(a)[j];
      if (kind == 3) q[j] = 0.5f * (g.point(a)[j] + g.point(b)[j]);
    }
  }
  return u;
}

void expect_search_exact(const Grid& g, int64_t m) {
  const NearestSearch ns(g);
  const auto u = queries(g, m, 77 + uint64_t(g.n));
  std::vector<uint16_t> got(static_cast<size_t>(m)), brute(static_cast<size_t>(m));
  for (SimdLevel lvl : {SimdLevel::kScalar, SimdLevel::kAvx2}) {
    SimdGuard guard;
    set_simd_level(lvl);
    ns.search(u.data(), m, got.data());
    ns.search_brute(u.data(), m, brute.data());
    for (int64_t i = 0; i < m; ++i) {
      const int64_t want = nearest_brute_scalar(g, u.data() + i * g.d);
      ASSERT_EQ(brute[size_t(i)], want) << g.name << " brute query " << i << " simd " << int(lvl);
      ASSERT_EQ(got[size_t(i)], want) << g.name << " search query " << i << " simd " << int(lvl);
    }
  }
}

TEST(Nearest, BuiltInGridsExact) {
  // E8P (65536 points): fewer here, its own test (test_quant_e8p) checks many more.
  for (const auto& [d, n] : builtin_grid_shapes()) expect_search_exact(builtin_grid(d, n), n > 4096 ? 600 : 4000);
}

TEST(Nearest, TiesGoToTheFirstIndex) {
  Grid g;
  g.name = "dup";
  g.d = 2;
  g.n = 20;
  for (int i = 0; i < 20; ++i) {
    g.points.push_back(float(i % 5));  // points 0..4 repeated 4 times
    g.points.push_back(0.0f);
  }
  const NearestSearch ns(g);
  for (int k = 0; k < 5; ++k) {
    const float u[2] = {float(k), 0.0f};
    uint16_t idx;
    ns.search(u, 1, &idx);
    EXPECT_EQ(idx, k);
    EXPECT_EQ(nearest_brute_scalar(g, u), k);
  }
  expect_search_exact(g, 500);
}

TEST(Nearest, PrunedSearchEqualsBruteForceOnLargeGrids) {
  // A random 4096-point grid in R^4 with duplicated points (forced ties; the candidate tree).
  Grid g;
  g.name = "random4096";
  g.d = 4;
  g.n = 4096;
  GaussRng rng(5);
  for (int64_t i = 0; i < g.n * g.d; ++i) g.points.push_back(float(rng.normal()));
  for (int64_t i = 0; i < 64; ++i) {
    for (int j = 0; j < 4; ++j) g.points[size_t((4000 + i) * 4 + j)] = g.points[size_t(i * 40 * 4 + j)];
  }
  expect_search_exact(g, 3000);
  // Grids the cluster search (with its per-member annulus) serves: 8 and 2 dimensions, > 1024
  // points, with repeated points.
  for (const int d : {8, 2}) {
    Grid h;
    h.name = fmt::format("random2000x{}", d);
    h.d = d;
    h.n = 2000;
    for (int64_t i = 0; i < h.n * h.d; ++i) h.points.push_back(float(rng.normal()));
    for (int64_t i = 0; i < 40; ++i) {
      for (int j = 0; j < d; ++j) h.points[size_t((1950 + i) * d + j)] = h.points[size_t(i * 37 * d + j)];
    }
    expect_search_exact(h, 4000);
  }
  if (!have_reference()) GTEST_SKIP() << "no reference grids";
  expect_search_exact(load_grid_file(kRef + "EDEN6-4096.n4096xd6.f32le"), 2000);
  expect_search_exact(load_grid_file(kRef + "QUIPSHARP8-65536.n65536xd8.f32le"), 400);
}

}  // namespace
}  // namespace aquakv

namespace aquakv {
namespace {

TEST(BuiltinGrid, EmbeddedDataEqualsCommittedFiles) {
  // src/quant/grid_builtin_data.cpp must be what `aquakv grid embed` makes from data/grids.
  const std::string dir = std::string(AQUAKV_TEST_DATA) + "/../../data/grids/";
  int n = 0;
  for (const auto& [d, count] : builtin_grid_shapes()) {
    if (builtin_grid(d, count).name.rfind("CLVQ", 0) != 0) continue;  // E8P: test_quant_e8p
    const std::string file = dir + fmt::format("CLVQ{}-{}.n{}xd{}.f32le", d, count, count, d);
    const Grid g = load_grid_file(file);
    EXPECT_EQ(builtin_grid(d, count).points, g.points) << file;
    ++n;
  }
  EXPECT_EQ(n, 10);
}

// Finding 10: a directory given as a grid file reported a size of 9223372036854775807 bytes.
TEST(GridFile, DirectoryIsNamedNotMeasured) {
  const std::string dir = tmp_path("griddir.n16xd2.f32le");
  std::filesystem::create_directories(dir);
  for (auto load : {+[](const std::string& p) { (void)load_grid_file(p); },
                    +[](const std::string& p) { (void)load_grid_file(p, 2, 16); },
                    +[](const std::string& p) { (void)make_codec("higgs:2x16:grid=" + p, 64, KvStream::kKey); }}) {
    try {
      load(dir);
      ADD_FAILURE() << "accepted a directory";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(dir + ": is a directory"), std::string::npos) << m;
      EXPECT_EQ(m.find("9223372036854775807"), std::string::npos) << m;
    }
  }
  std::filesystem::remove_all(dir);
  // A shape in the name too large to parse is refused, not thrown as std::out_of_range.
  EXPECT_THROW(load_grid_file("/tmp/x.n99999999999999999999xd2.f32le"), Error);
}

}  // namespace
}  // namespace aquakv

namespace aquakv {
namespace {

// The candidate tree (grids of 3..6 dimensions, 1025..4096 points) on many normal queries, the
// tie-making kinds of `queries`, and queries outside its box, at every SIMD level.
TEST(Nearest, CandidateTreeEqualsBruteForce) {
  std::vector<Grid> grids;
  if (have_reference()) grids.push_back(load_grid_file(kRef + "EDEN6-4096.n4096xd6.f32le"));
  Grid g3;  // a 3-d grid with points repeated at both ends of the index range
  g3.name = "random2000x3";
  g3.d = 3;
  g3.n = 2000;
  GaussRng rng(8);
  for (int64_t i = 0; i < g3.n * g3.d; ++i) g3.points.push_back(float(rng.normal()));
  for (int64_t i = 0; i < 30; ++i) {
    for (int j = 0; j < 3; ++j) g3.points[size_t((1900 + i) * 3 + j)] = g3.points[size_t(i * 3 + j)];
  }
  grids.push_back(g3);
  for (const Grid& g : grids) {
    const NearestSearch ns(g);
    auto u = queries(g, 4000, 99);
    GaussRng r(10);
    for (int64_t i = 0; i < 30000 * g.d; ++i) u.push_back(float(r.normal()));
    for (int64_t i = 0; i < 200 * g.d; ++i) u.push_back(float(20.0 * r.normal()));  // many outside the box
    const int64_t m = int64_t(u.size()) / g.d;
    std::vector<uint16_t> got(static_cast<size_t>(m)), brute(static_cast<size_t>(m));
    SimdGuard guard;
    set_simd_level(SimdLevel::kScalar);
    ns.search_brute(u.data(), m, brute.data());
    for (int64_t i = 0; i < 3000; ++i) ASSERT_EQ(brute[size_t(i)], nearest_brute_scalar(g, u.data() + i * g.d)) << g.name << " " << i;
    for (SimdLevel lvl : {SimdLevel::kScalar, SimdLevel::kAvx2}) {
      if (cpu_simd_level() < lvl) continue;
      set_simd_level(lvl);
      ns.search(u.data(), m, got.data());
      for (int64_t i = 0; i < m; ++i) ASSERT_EQ(got[size_t(i)], brute[size_t(i)]) << g.name << " query " << i << " simd " << int(lvl);
    }
  }
}

}  // namespace
}  // namespace aquakv

namespace aquakv {
namespace {

// Codecs share one search per grid content: equal points share (whatever the name), other points
// do not, and once no one holds a search the next request builds a new one with the right points.
TEST(Nearest, SharedSearchIsPerContent) {
  Grid a = builtin_grid(2, 16);
  Grid b = a;
  b.name = "another name";
  Grid c = a;
  c.points[3] += 0.25f;
  auto sa = shared_nearest_search(a);
  const auto sb = shared_nearest_search(b), sc = shared_nearest_search(c);
  EXPECT_EQ(sa.get(), sb.get());
  EXPECT_NE(sa.get(), sc.get());
  EXPECT_EQ(sa->grid().points, a.points);
  EXPECT_EQ(sc->grid().points, c.points);
  std::weak_ptr<const NearestSearch> w = sa;
  sa.reset();
  EXPECT_FALSE(w.expired());  // sb still holds it
  EXPECT_EQ(shared_nearest_search(a).get(), sb.get());
  // A large grid is keyed by a sample of its coordinates: one differing from another only
  // between the samples still gets a search of its own points.
  Grid big = builtin_grid(8, 65536), near = big;
  near.points[1] += 0.5f;
  const auto sbig = shared_nearest_search(big), snear = shared_nearest_search(near);
  EXPECT_NE(sbig.get(), snear.get());
  EXPECT_EQ(snear->grid().points, near.points);
  EXPECT_EQ(sbig->grid().points, big.points);
}

}  // namespace
}  // namespace aquakv
