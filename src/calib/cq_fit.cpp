// Coupled Quantization calibration (calib/cq_fit.h).
#include "aquakv/calib/cq_fit.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "aquakv/ops/half_rows.h"
#include "aquakv/quant/cq_codec.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// Round-trip error of rows [r0, r1) of fp16 rows m.
double rel_mse(const CqCodec& codec, const std::vector<uint16_t>& m, int64_t r0, int64_t r1) {
  const int64_t C = codec.dim();
  std::vector<float> x(static_cast<size_t>((r1 - r0) * C));
  halves_to_floats(m.data() + r0 * C, int64_t(x.size()), x.data());
  return codec_relative_mse(codec, x.data(), r1 - r0);
}

}  // namespace

std::vector<float> kmeans_nd(const std::vector<float>& x, int64_t c, int64_t k, int max_iters, uint64_t seed,
                             const std::vector<float>* w) {
  const int64_t n = int64_t(x.size()) / c;
  AQUAKV_CHECK(n >= 1 && k >= 1);
  AQUAKV_CHECK(w == nullptr || int64_t(w->size()) == n, "one weight per point");
  const auto weight = [&](int64_t i) { return w != nullptr ? double((*w)[size_t(i)]) : 1.0; };
  // Start: k-means++ seeding -- the first centroid a random point, each next one a point drawn
  // with probability proportional to its weight times its squared distance to the nearest
  // centroid so far (one pass over the points per centroid, as much work as one Lloyd
  // iteration in all).
  std::mt19937_64 rng(seed);
  std::vector<float> cen(static_cast<size_t>(k * c));
  std::vector<double> d2(static_cast<size_t>(n), INFINITY);
  int64_t pick = int64_t(rng() % uint64_t(n));
  if (w != nullptr) {  // weighted: the first centroid too is drawn by weight
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += weight(i);
    if (total > 0) {
      double u = std::uniform_real_distribution<double>(0, total)(rng);
      pick = n - 1;
      for (int64_t i = 0; i < n; ++i)
        if ((u -= weight(i)) <= 0 && weight(i) > 0) { pick = i; break; }
    }
  }
  for (int64_t j = 0; j < k; ++j) {
    std::copy_n(x.begin() + pick * c, c, cen.begin() + j * c);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      double d = 0;
      for (int64_t e = 0; e < c; ++e) d += std::pow(double(x[size_t(i * c + e)]) - cen[size_t(j * c + e)], 2);
      d2[size_t(i)] = std::min(d2[size_t(i)], d);
      total += weight(i) * d2[size_t(i)];
    }
    // All points already on centroids: further centroids repeat the points cyclically.
    if (!(total > 0)) {
      pick = (pick + 1) % n;
      continue;
    }
    double u = std::uniform_real_distribution<double>(0, total)(rng);
    pick = n - 1;
    for (int64_t i = 0; i < n; ++i)
      if ((u -= weight(i) * d2[size_t(i)]) <= 0) { pick = i; break; }
  }
  std::vector<uint16_t> assign(static_cast<size_t>(n), uint16_t(0xffff));
  std::vector<double> sum(static_cast<size_t>(k * c));
  std::vector<double> cnt(static_cast<size_t>(k));  // weight of each cluster
  for (int it = 0; it < max_iters; ++it) {
    bool changed = false;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t a = CqCodec::nearest(cen.data(), k, c, x.data() + i * c);
      if (a != assign[size_t(i)]) changed = true;
      assign[size_t(i)] = a;
    }
    if (!changed) break;
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(cnt.begin(), cnt.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = assign[size_t(i)];
      const double wi = weight(i);
      cnt[size_t(a)] += wi;
      for (int64_t d = 0; d < c; ++d) sum[size_t(a * c + d)] += wi * x[size_t(i * c + d)];
    }
    for (int64_t j = 0; j < k; ++j)
      if (cnt[size_t(j)] > 0)
        for (int64_t d = 0; d < c; ++d) cen[size_t(j * c + d)] = float(sum[size_t(j * c + d)] / cnt[size_t(j)]);
  }
  return cen;
}

QuantTables fit_cq(const KvSamples& s, const CqFitOptions& opt, std::vector<CqLayerStats>* stats) {
  const int64_t C = s.width, L = s.n_layers, c = opt.channels;
  if (c < 1 || C % c != 0) fail("calibrate --method cq: --channels {} must divide the KV width {}", c, C);
  if (opt.bits < 1 || opt.bits > 12) fail("calibrate --method cq: --bits must be in [1, 12], got {}", opt.bits);
  if (s.n_train < 1) fail("calibrate --method cq: no training rows captured");
  if (opt.fisher && (int64_t(s.fk.size()) != L || int64_t(s.fv.size()) != L))
    fail("calibrate --method cq --fisher: the samples carry no Fisher information");
  QuantTables t;
  t.method = "cq";
  t.bits = opt.bits;
  t.group = c;
  t.layers.resize(size_t(L));
  const int64_t K = int64_t(1) << opt.bits, G = C / c;
  // The same seeded subsample of training rows for every layer (rows are tokens).
  // With Fisher information, from the training rows that have it (the leading fisher_rows()).
  std::vector<int64_t> rows(static_cast<size_t>(opt.fisher ? s.fisher_rows() : s.n_train));
  std::iota(rows.begin(), rows.end(), 0);
  std::shuffle(rows.begin(), rows.end(), std::mt19937_64(opt.seed));
  rows.resize(size_t(std::min(int64_t(rows.size()), opt.max_rows)));
  std::sort(rows.begin(), rows.end());
  const int64_t n = int64_t(rows.size());
  std::vector<CqLayerStats> st(static_cast<size_t>(L));
  for (auto& l : t.layers) {
    l.key_centroids.resize(size_t(C * K));
    l.value_centroids.resize(size_t(C * K));
  }
  // One task per (layer, stream, group).
  parallel_for(L * 2 * G, [&](int64_t t0, int64_t t1) {
    std::vector<float> pts(static_cast<size_t>(n * c)), wts(static_cast<size_t>(opt.fisher ? n : 0));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t l = task / (2 * G), stream = task / G % 2, g = task % G;
      const auto& m = stream == 0 ? s.k[size_t(l)] : s.v[size_t(l)];
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < c; ++d) pts[size_t(i * c + d)] = fp16_to_fp32(m[size_t(rows[size_t(i)] * C + g * c + d)]);
      if (opt.fisher) {  // a point weighs the Fisher information of its c elements, summed
        const auto& f = stream == 0 ? s.fk[size_t(l)] : s.fv[size_t(l)];
        for (int64_t i = 0; i < n; ++i) {
          double sw = 0;
          for (int64_t d = 0; d < c; ++d) sw += f[size_t(rows[size_t(i)] * C + g * c + d)];
          wts[size_t(i)] = float(sw);
        }
      }
      const auto book = kmeans_nd(pts, c, K, opt.max_iters, opt.seed + uint64_t(task), opt.fisher ? &wts : nullptr);
      auto& dst = stream == 0 ? t.layers[size_t(l)].key_centroids : t.layers[size_t(l)].value_centroids;
      std::copy(book.begin(), book.end(), dst.begin() + g * K * c);
    }
  }, 1);
  if (stats) {
    const bool val = s.n_val > 0;
    const int64_t r0 = val ? s.n_train : 0, r1 = val ? s.rows() : s.n_train;
    for (int64_t l = 0; l < L; ++l) {
      st[size_t(l)].key_rel_mse = rel_mse(CqCodec("cq-fit-key", C, c, opt.bits, t.layers[size_t(l)].key_centroids), s.k[size_t(l)], r0, r1);
      st[size_t(l)].value_rel_mse = rel_mse(CqCodec("cq-fit-value", C, c, opt.bits, t.layers[size_t(l)].value_centroids), s.v[size_t(l)], r0, r1);
    }
    *stats = st;
  }
  return t;
}

}  // namespace aquakv
