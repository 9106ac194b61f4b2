// Grid files, built-in grids, the CLVQ generator and MSE measurement.
#include "aquakv/quant/grid.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>

#include "aquakv/quant/e8p.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/quant/nearest.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "grid_builtin.h"

namespace aquakv {

void validate_grid(const Grid& g, const std::string& what) {
  if (g.d < 1 || g.d > kMaxGridDim) fail("{}: grid dimension d must be in [1, {}], got {}", what, kMaxGridDim, g.d);
  if (g.n < 2 || g.n > kMaxGridPoints) fail("{}: grid size n must be in [2, {}], got {}", what, kMaxGridPoints, g.n);
  if (int64_t(g.points.size()) != g.n * g.d) {
    fail("{}: expected {} values for n={} d={}, got {}", what, g.n * g.d, g.n, g.d, g.points.size());
  }
  for (size_t i = 0; i < g.points.size(); ++i) {
    if (!std::isfinite(g.points[i])) fail("{}: value {} is not finite", what, i);
  }
}

namespace {

void check_grid_shape(const std::string& what, int64_t d, int64_t n) {
  if (d < 1 || d > kMaxGridDim) fail("{}: grid dimension d must be in [1, {}], got {}", what, kMaxGridDim, d);
  if (n < 2 || n > kMaxGridPoints) fail("{}: grid size n must be in [2, {}], got {}", what, kMaxGridPoints, n);
}

}  // namespace

Grid parse_grid(std::string_view bytes, int d, int64_t n, const std::string& name) {
  check_grid_shape(name, d, n);
  const int64_t want = n * d * 4;
  if (int64_t(bytes.size()) != want)
    fail("{}: grid file size: expected {} bytes (n={} x d={} float32), got {}", name, want, n, d, bytes.size());
  Grid g;
  g.name = std::filesystem::path(name).filename().string();
  g.d = d;
  g.n = n;
  g.points.resize(size_t(n * d));
  for (int64_t i = 0; i < n * d; ++i) {
    const auto* b = reinterpret_cast<const uint8_t*>(bytes.data()) + 4 * i;
    const uint32_t w = uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
    std::memcpy(&g.points[size_t(i)], &w, 4);
  }
  validate_grid(g, name);
  return g;
}

Grid load_grid_file(const std::string& path, int d, int64_t n) {
  check_grid_shape(path, d, n);  // before reading: the shape bounds the size
  return parse_grid(read_file(path, "grid file", ReadKind::kData), d, n, path);
}

Grid load_grid_file(const std::string& path) {
  static const std::regex re(R"(n(\d+)xd(\d+)\.f32le$)");
  std::smatch m;
  const std::string name = std::filesystem::path(path).filename().string();
  if (!std::regex_search(name, m, re)) {
    fail("{}: grid file name must end in n<n>xd<d>.f32le to give its shape", path);
  }
  // At most 6 digits each: larger values are out of range anyway (and stoll cannot overflow).
  if (m[1].length() > 6 || m[2].length() > 6) fail("{}: grid shape in the file name is out of range", path);
  const int64_t n = std::stoll(m[1].str());
  const int64_t d = std::stoll(m[2].str());
  check_grid_shape(path, d, n);
  return load_grid_file(path, int(d), n);
}

void save_grid_file(const Grid& g, const std::string& path) {
  validate_grid(g, path);
  std::string bytes;
  bytes.reserve(g.points.size() * 4);
  for (float v : g.points) {
    uint32_t w;
    std::memcpy(&w, &v, 4);
    const char b[4] = {char(w), char(w >> 8), char(w >> 16), char(w >> 24)};
    bytes.append(b, 4);
  }
  write_file_atomic(path, bytes, "grid file");
}

const Grid& builtin_grid(int d, int64_t n) {
  static const std::vector<Grid> grids = [] {
    std::vector<Grid> v;
    for (int i = 0; i < detail::kNumBuiltinGrids; ++i) {
      const auto& b = detail::kBuiltinGrids[i];
      Grid g;
      g.name = b.name;
      g.d = b.d;
      g.n = b.n;
      g.points.assign(b.data, b.data + int64_t(b.d) * b.n);
      v.push_back(std::move(g));
    }
    return v;
  }();
  for (const auto& g : grids) {
    if (g.d == d && g.n == n) return g;
  }
  if (d == 8 && n == 65536) return e8p_grid();  // built from its lattice description, not embedded
  std::string have;
  for (const auto& [gd, gn] : builtin_grid_shapes()) have += fmt::format("{}{}x{}", have.empty() ? "" : " ", gd, gn);
  fail("grid d={} n={}: not built in (built-in d x n: {}); give a grid file", d, n, have);
}

std::vector<std::pair<int, int64_t>> builtin_grid_shapes() {
  std::vector<std::pair<int, int64_t>> v;
  for (int i = 0; i < detail::kNumBuiltinGrids; ++i) {
    v.emplace_back(detail::kBuiltinGrids[i].d, detail::kBuiltinGrids[i].n);
  }
  v.emplace_back(8, 65536);  // E8P (quant/e8p.h)
  return v;
}

namespace {

constexpr int64_t kChunk = 4096;  // samples per independently seeded chunk

uint64_t chunk_seed(uint64_t seed, uint64_t iter, uint64_t chunk) {
  SplitMix64 s(seed ^ (iter * 0x9e3779b97f4a7c15ull) ^ (chunk * 0xc2b2ae3d27d4eb4full));
  s.next();
  return s.next();
}

// One pass over `samples` fresh normals: per-point sums and counts, and the total squared error.
struct Stats {
  std::vector<double> sum;    // (n, d)
  std::vector<int64_t> cnt;   // (n)
  double sq_err = 0;
};

Stats assign_pass(const Grid& g, const NearestSearch& ns, int64_t samples, uint64_t seed,
                  uint64_t iter, bool brute) {
  const int64_t chunks = (samples + kChunk - 1) / kChunk;
  std::vector<Stats> part(static_cast<size_t>(chunks));
  parallel_for(chunks, [&](int64_t c0, int64_t c1) {
    std::vector<float> u(size_t(kChunk * g.d));
    std::vector<uint16_t> idx(static_cast<size_t>(kChunk));
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t m = std::min(kChunk, samples - c * kChunk);
      GaussRng rng(chunk_seed(seed, iter, uint64_t(c)));
      for (int64_t i = 0; i < m * g.d; ++i) u[size_t(i)] = float(rng.normal());
      if (brute) {
        ns.search_brute(u.data(), m, idx.data());
      } else {
        ns.search(u.data(), m, idx.data());
      }
      Stats& s = part[size_t(c)];
      s.sum.assign(size_t(g.n * g.d), 0.0);
      s.cnt.assign(size_t(g.n), 0);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t k = idx[size_t(i)];
        ++s.cnt[size_t(k)];
        for (int j = 0; j < g.d; ++j) {
          const double x = u[size_t(i * g.d + j)];
          s.sum[size_t(k * g.d + j)] += x;
          const double e = x - g.points[size_t(k * g.d + j)];
          s.sq_err += e * e;
        }
      }
    }
  });
  Stats total;
  total.sum.assign(size_t(g.n * g.d), 0.0);
  total.cnt.assign(size_t(g.n), 0);
  for (const Stats& s : part) {  // fixed order: deterministic for any thread count
    for (size_t i = 0; i < s.sum.size(); ++i) total.sum[i] += s.sum[i];
    for (size_t i = 0; i < s.cnt.size(); ++i) total.cnt[i] += s.cnt[i];
    total.sq_err += s.sq_err;
  }
  return total;
}

}  // namespace

namespace {

Grid clvq_once(int d, int64_t n, const ClvqOptions& opt, const ClvqProgress& progress) {
  if (d < 1 || d > kMaxGridDim) fail("grid generator: d must be in [1, {}], got {}", kMaxGridDim, d);
  if (n < 2 || n > kMaxGridPoints) fail("grid generator: n must be in [2, {}], got {}", kMaxGridPoints, n);
  if (opt.iterations < 1 || opt.samples < n) {
    fail("grid generator: need iterations >= 1 and samples >= n, got {} and {}", opt.iterations, opt.samples);
  }
  Grid g;
  g.name = fmt::format("CLVQ{}-{}", d, n);
  g.d = d;
  g.n = n;
  g.points.resize(size_t(n * d));
  GaussRng init(opt.seed);
  for (auto& v : g.points) v = float(init.normal());
  GaussRng reseed(opt.seed ^ 0x5bd1e995ull);
  // Step size: 1 for the first 70% of the iterations (plain Lloyd on fresh samples; Lloyd
  // converges slowly, in 1-D especially, so it needs many full steps), then 1/(j+1) in the tail,
  // which makes each point the average of the tail's cell means and shrinks the sampling noise.
  const int full = std::max(1, opt.iterations * 7 / 10);
  for (int it = 0; it < opt.iterations; ++it) {
    const NearestSearch ns(g, /*brute_only=*/true);  // assign_pass brute-forces
    const Stats s = assign_pass(g, ns, opt.samples, opt.seed, uint64_t(it) + 1, true);
    const double step = it < full ? 1.0 : 1.0 / double(it - full + 2);
    for (int64_t k = 0; k < n; ++k) {
      if (s.cnt[size_t(k)] == 0) {
        // Empty cell: the point is useless where it is; restart it at a fresh normal sample.
        for (int j = 0; j < d; ++j) g.points[size_t(k * d + j)] = float(reseed.normal());
        continue;
      }
      for (int j = 0; j < d; ++j) {
        const double mean = s.sum[size_t(k * d + j)] / double(s.cnt[size_t(k)]);
        float& p = g.points[size_t(k * d + j)];
        p = float(p + step * (mean - p));
      }
    }
    if (progress) progress(it, s.sq_err / double(opt.samples * d));
  }
  if (opt.final_samples > 0) {
    // Return the final cell means (an exact Lloyd step on many samples).
    const NearestSearch ns(g, /*brute_only=*/true);  // assign_pass brute-forces
    const Stats s = assign_pass(g, ns, opt.final_samples, opt.seed, 0, true);
    for (int64_t k = 0; k < n; ++k) {
      if (s.cnt[size_t(k)] == 0) continue;
      for (int j = 0; j < d; ++j) g.points[size_t(k * d + j)] = float(s.sum[size_t(k * d + j)] / double(s.cnt[size_t(k)]));
    }
  }
  return g;
}

}  // namespace

Grid generate_grid_clvq(int d, int64_t n, const ClvqOptions& opt, const ClvqProgress& progress) {
  if (opt.restarts < 1) fail("grid generator: restarts must be >= 1, got {}", opt.restarts);
  Grid best;
  double best_mse = 0;
  for (int r = 0; r < opt.restarts; ++r) {
    ClvqOptions o = opt;
    o.seed = r == 0 ? opt.seed : SplitMix64(opt.seed + uint64_t(r)).next();
    Grid g = clvq_once(d, n, o, progress);
    const double mse = grid_mse(g, int64_t(1) << 18, 0x6d5e);
    if (r == 0 || mse < best_mse) {
      best = std::move(g);
      best_mse = mse;
    }
  }
  return best;
}

double grid_mse(const Grid& g, int64_t samples, uint64_t seed) {
  const NearestSearch ns(g);
  const Stats s = assign_pass(g, ns, samples, seed ^ 0xa5a5a5a5ull, 0x7fffffffull, false);
  return s.sq_err / double(samples * g.d);
}

}  // namespace aquakv
