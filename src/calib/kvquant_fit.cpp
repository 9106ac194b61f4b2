// KVQuant calibration (calib/kvquant_fit.h).
#include "aquakv/calib/kvquant_fit.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "aquakv/quant/kvquant_codec.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// Rows [r0, r1) of a recorded fp16 matrix as floats.
double rel_mse(const Codec& codec, const std::vector<float>& x, int64_t C) {
  return codec_relative_mse(codec, x.data(), int64_t(x.size()) / C);
}

std::vector<float> rows_f32(const std::vector<uint16_t>& m, int64_t C, int64_t r0, int64_t r1) {
  std::vector<float> x(size_t((r1 - r0) * C));
  for (size_t i = 0; i < x.size(); ++i) x[i] = fp16_to_fp32(m[size_t(r0 * C) + i]);
  return x;
}

// The normalized non-outlier values of every row (the k-means input), sorted; with Fisher
// information f ((rows, C), else null) also their weights f * s^2, s the normalization scale of
// the value (a datatype error e in u moves x by s * e, and the loss by about f * (s * e)^2).
// Rows at the start of a window (skip_every > 0: r % skip_every == 0) are left out with weights:
// the cache keeps the first token exact.
void normalized_values(const KvQuantParams& p, const std::vector<float>& x, int64_t C, const float* f,
                       int64_t fisher_rows, int64_t skip_every, std::vector<float>* values, std::vector<float>* weights) {
  // With Fisher information, only the rows that have it (fisher_rows(), the leading ones).
  const int64_t rows = f != nullptr ? std::min(int64_t(x.size()) / C, fisher_rows) : int64_t(x.size()) / C;
  std::vector<std::pair<float, float>> uw;
  std::vector<float> u(static_cast<size_t>(C));
  std::vector<int32_t> outl(size_t(p.outliers_per_row));
  uw.reserve(size_t(rows * (C - p.outliers_per_row)));
  for (int64_t r = 0; r < rows; ++r) {
    if (f != nullptr && skip_every > 0 && r % skip_every == 0) continue;
    float o, s;
    kvquant_normalize_row(p, C, x.data() + r * C, u.data(), outl.data(), &o, &s);
    size_t j = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (j < outl.size() && outl[j] == c) { ++j; continue; }
      if (!std::isfinite(u[size_t(c)])) continue;
      const double sc = p.per_channel ? p.scale[size_t(c)] : s;
      uw.emplace_back(u[size_t(c)], f != nullptr ? float(double(f[r * C + c]) * sc * sc) : 1.0f);
    }
  }
  std::sort(uw.begin(), uw.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  values->resize(uw.size());
  for (size_t i = 0; i < uw.size(); ++i) (*values)[i] = uw[i].first;
  if (f != nullptr) {
    weights->resize(uw.size());
    for (size_t i = 0; i < uw.size(); ++i) (*weights)[i] = uw[i].second;
  }
}

}  // namespace

std::vector<float> kmeans_1d(const std::vector<float>& v, int k, int max_iters, const std::vector<float>* w) {
  const int64_t n = int64_t(v.size());
  AQUAKV_CHECK(w == nullptr || int64_t(w->size()) == n, "one weight per value");
  std::vector<double> c(static_cast<size_t>(k));
  if (n == 0) {
    for (int i = 0; i < k; ++i) c[size_t(i)] = -1.0 + 2.0 * (i + 0.5) / k;
  } else {
    for (int i = 0; i < k; ++i) c[size_t(i)] = v[size_t(std::min<int64_t>(n - 1, int64_t((i + 0.5) / k * double(n))))];
  }
  // Prefix sums of w * x and of w (unweighted: w = 1, the count).
  std::vector<double> pre(size_t(n + 1), 0.0), wpre(size_t(n + 1), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double wi = w != nullptr ? double((*w)[size_t(i)]) : 1.0;
    pre[size_t(i + 1)] = pre[size_t(i)] + wi * v[size_t(i)];
    wpre[size_t(i + 1)] = wpre[size_t(i)] + wi;
  }
  for (int it = 0; it < max_iters && n > 0; ++it) {
    // Cluster i = (b_{i-1}, b_i] with b_i the midpoint of c_i and c_{i+1} (ties to the lower
    // centroid, as the codec's nearest()).
    bool moved = false;
    int64_t lo = 0;
    for (int i = 0; i < k; ++i) {
      const int64_t hi = i + 1 < k ? int64_t(std::upper_bound(v.begin(), v.end(),
                                                              float(0.5 * (c[size_t(i)] + c[size_t(i + 1)]))) - v.begin())
                                   : n;
      if (hi > lo && wpre[size_t(hi)] - wpre[size_t(lo)] > 0) {  // an empty or weightless cluster stays
        const double m = (pre[size_t(hi)] - pre[size_t(lo)]) / (wpre[size_t(hi)] - wpre[size_t(lo)]);
        if (m != c[size_t(i)]) moved = true;
        c[size_t(i)] = m;
      }
      lo = std::max(lo, hi);
    }
    std::sort(c.begin(), c.end());
    if (!moved) break;
  }
  // Strictly increasing floats (duplicates from few distinct values move up by one step).
  std::vector<float> out(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i) {
    out[size_t(i)] = float(c[size_t(i)]);
    if (i > 0 && !(out[size_t(i)] > out[size_t(i - 1)]))
      out[size_t(i)] = std::nextafter(out[size_t(i - 1)], INFINITY);
  }
  return out;
}

std::vector<float> uniform_levels(int k) {
  AQUAKV_CHECK(k >= 2, "a uniform datatype needs at least 2 levels");
  std::vector<float> out(static_cast<size_t>(k));
  for (int i = 0; i < k; ++i) out[size_t(i)] = float(-1.0 + 2.0 * i / (k - 1));
  return out;
}

QuantTables fit_kvquant(const KvSamples& s, const KvQuantFitOptions& opt,
                          std::vector<KvQuantLayerStats>* stats) {
  if (opt.bits < 1 || opt.bits > 8) fail("calibrate --method kvquant: --bits must be in [1, 8], got {}", opt.bits);
  if (!(opt.outlier_fraction >= 0 && opt.outlier_fraction < 0.5))
    fail("calibrate --method kvquant: --outliers must be in [0, 0.5), got {}", opt.outlier_fraction);
  const int64_t C = s.width, L = s.n_layers;
  if (s.n_train < 1) fail("calibrate --method kvquant: no training rows captured");
  QuantTables t;
  t.method = "kvquant";
  t.bits = opt.bits;
  t.outliers_per_row = int64_t(std::ceil(opt.outlier_fraction * double(C) - 1e-9));
  t.layers.resize(size_t(L));
  std::vector<KvQuantLayerStats> st(static_cast<size_t>(L));
  const int K = 1 << opt.bits;
  if (opt.uniform && opt.fisher) fail("calibrate --method kvquant: --datatype uniform has no k-means to weigh (--fisher)");
  if (opt.fisher && (int64_t(s.fk.size()) != L || int64_t(s.fv.size()) != L))
    fail("calibrate --method kvquant --fisher: the samples carry no Fisher information");
  const double q = opt.outlier_fraction / 2;
  parallel_for(L, [&](int64_t l0, int64_t l1) {
    for (int64_t l = l0; l < l1; ++l) {
      QuantLayerTables& out = t.layers[size_t(l)];
      const auto xk = rows_f32(s.k[size_t(l)], C, 0, s.n_train);
      const auto xv = rows_f32(s.v[size_t(l)], C, 0, s.n_train);
      // Keys: per-channel ranges from the q and 1 - q quantiles.
      out.key_offset.resize(size_t(C));
      out.key_scale.resize(size_t(C));
      std::vector<float> col(size_t(s.n_train));
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t r = 0; r < s.n_train; ++r) col[size_t(r)] = xk[size_t(r * C + c)];
        const int64_t n = s.n_train;
        const int64_t ilo = std::min<int64_t>(n - 1, int64_t(q * double(n)));
        const int64_t ihi = std::max<int64_t>(0, n - 1 - int64_t(q * double(n)));
        std::nth_element(col.begin(), col.begin() + ilo, col.end());
        const float lo = col[size_t(ilo)];
        std::nth_element(col.begin(), col.begin() + ihi, col.end());
        const float hi = col[size_t(ihi)];
        out.key_offset[size_t(c)] = 0.5f * (hi + lo);
        out.key_scale[size_t(c)] = std::max(0.5f * (hi - lo), 1e-6f * std::max(1.0f, std::fabs(out.key_offset[size_t(c)])));
      }
      KvQuantParams pk;
      pk.bits = opt.bits;
      pk.per_channel = true;
      pk.offset = out.key_offset;
      pk.scale = out.key_scale;
      pk.outliers_per_row = t.outliers_per_row;
      const float* fk = opt.fisher ? s.fk[size_t(l)].data() : nullptr;
      const float* fv = opt.fisher ? s.fv[size_t(l)].data() : nullptr;
      std::vector<float> u, w;
      normalized_values(pk, xk, C, fk, s.fisher_rows(), s.rows_per_window, &u, &w);
      out.key_centroids = opt.uniform ? uniform_levels(K) : kmeans_1d(u, K, opt.max_iters, opt.fisher ? &w : nullptr);
      KvQuantParams pv;
      pv.bits = opt.bits;
      pv.outliers_per_row = t.outliers_per_row;
      normalized_values(pv, xv, C, fv, s.fisher_rows(), s.rows_per_window, &u, &w);
      out.value_centroids = opt.uniform ? uniform_levels(K) : kmeans_1d(u, K, opt.max_iters, opt.fisher ? &w : nullptr);
      // Held-out error of the fitted codecs.
      pk.centroids = out.key_centroids;
      pv.centroids = out.value_centroids;
      const bool val = s.n_val > 0;
      const int64_t r0 = val ? s.n_train : 0, r1 = val ? s.rows() : s.n_train;
      st[size_t(l)].key_rel_mse = rel_mse(KvQuantCodec("kvquant-fit-key", C, pk), rows_f32(s.k[size_t(l)], C, r0, r1), C);
      st[size_t(l)].value_rel_mse = rel_mse(KvQuantCodec("kvquant-fit-value", C, pv), rows_f32(s.v[size_t(l)], C, r0, r1), C);
    }
  });
  if (stats) *stats = st;
  return t;
}

}  // namespace aquakv
