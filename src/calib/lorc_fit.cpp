// LoRC plans from the model's weights (calib/lorc_fit.h).
#include "aquakv/calib/lorc_fit.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "aquakv/calib/linalg.h"
#include "aquakv/engine/fingerprint.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/check.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// A projection's rows dequantized to f32 (C x d).
std::vector<float> dequantize(const QMatrix& w) {
  std::vector<float> out(size_t(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) dequantize_row(w.type, w.row(r), out.data() + r * w.cols, w.cols);
  return out;
}

}  // namespace

double LorcSvd::condition() const {
  if (sigma.empty() || !(sigma.front() > 0.0)) return 1.0;
  return sigma.front() / std::max(sigma.back(), 1e-12 * sigma.front());
}

LorcSvd lorc_svd(const float* w, int64_t C, int64_t d) {
  AQUAKV_CHECK(C >= 1 && d >= 1);
  // G = W W^T in double, both triangles.
  std::vector<double> g(size_t(C * C), 0.0);
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      const float* a = w + i * d;
      const float* b = w + j * d;
      double s = 0.0;
      for (int64_t k = 0; k < d; ++k) s += double(a[k]) * double(b[k]);
      g[size_t(i * C + j)] = g[size_t(j * C + i)] = s;
    }
  std::vector<double> values, vectors;
  eigh(C, g, values, vectors);  // ascending
  LorcSvd svd;
  svd.C = C;
  svd.sigma.resize(size_t(C));
  svd.u.resize(size_t(C * C));
  for (int64_t j = 0; j < C; ++j) {
    const int64_t src = C - 1 - j;  // descending order
    svd.sigma[size_t(j)] = std::sqrt(std::max(values[size_t(src)], 0.0));
    for (int64_t i = 0; i < C; ++i) svd.u[size_t(i * C + j)] = vectors[size_t(i * C + src)];
  }
  return svd;
}

std::vector<int64_t> lorc_ranks(const std::vector<double>& condition, double keep, bool progressive, int64_t C) {
  if (!(keep > 0.0 && keep <= 1.0)) fail("LoRC: the share of dimensions kept must be in (0, 1], got {}", keep);
  if (C < 1 || condition.empty()) fail("LoRC: no layers or no channels to plan");
  const size_t L = condition.size();
  auto rank_of = [&](double share) { return std::clamp<int64_t>(int64_t(std::llround(share * double(C))), 1, C); };
  std::vector<int64_t> ranks(L);
  // L_l = sum_{j >= l} ln kappa_j, normalised to [0, 1].
  std::vector<double> cum(L);
  double acc = 0.0;
  for (size_t l = L; l-- > 0;) {
    acc += std::log(std::max(condition[l], 1.0));
    cum[l] = acc;
  }
  const auto [mn, mx] = std::minmax_element(cum.begin(), cum.end());
  if (!progressive || !(*mx > *mn)) {
    std::fill(ranks.begin(), ranks.end(), rank_of(keep));
    return ranks;
  }
  std::vector<double> s(L);
  for (size_t l = 0; l < L; ++l) s[l] = (cum[l] - *mn) / (*mx - *mn);
  const double mean = std::accumulate(s.begin(), s.end(), 0.0) / double(L);
  double lo = (keep - mean) / (1.0 - mean), hi = 1.0;
  if (lo < 0.0) {
    lo = 0.0;
    hi = keep / mean;
  }
  for (size_t l = 0; l < L; ++l) ranks[l] = rank_of(lo + (hi - lo) * s[l]);
  return ranks;
}

LorcStream lorc_stream(const LorcSvd& svd, int64_t rank, const float* bias) {
  const int64_t C = svd.C;
  AQUAKV_CHECK(rank >= 1 && rank <= C);
  LorcStream s;
  s.rank = rank;
  s.condition = svd.condition();
  s.basis.resize(size_t(C * rank));
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < rank; ++j) s.basis[size_t(i * rank + j)] = float(svd.u[size_t(i * C + j)]);
  s.offset.assign(size_t(C), 0.0f);
  if (bias != nullptr) std::copy_n(bias, C, s.offset.begin());
  return s;
}

double lorc_energy_kept(const LorcSvd& svd, int64_t rank) {
  double all = 0.0, kept = 0.0;
  for (size_t j = 0; j < svd.sigma.size(); ++j) {
    const double e = svd.sigma[j] * svd.sigma[j];
    all += e;
    if (int64_t(j) < rank) kept += e;
  }
  return all > 0.0 ? kept / all : 1.0;
}

LorcPlan fit_lorc(const Model& model, const LorcFitOptions& opt) {
  const ModelConfig& cfg = model.config();
  if (cfg.qk_norm)
    fail("calibrate --method lorc: {} normalises each key head (QK-norm), so its keys are not in the column space of "
         "W_k and LoRC's low-rank projection does not apply", cfg.arch);
  const int64_t C = cfg.kv_width(), d = cfg.d_model;
  std::vector<std::array<LorcSvd, 2>> svd(size_t(cfg.n_layers));
  std::array<std::vector<double>, 2> cond;
  for (int l = 0; l < cfg.n_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    for (int s = 0; s < 2; ++s) {
      const QMatrix& m = s == 0 ? w.wk : w.wv;
      if (m.rows != C || m.cols != d)
        fail("calibrate --method lorc: layer {} {} projection is {} x {}, expected {} x {}", l, s == 0 ? "key" : "value",
             m.rows, m.cols, C, d);
      const std::vector<float> dense = dequantize(m);
      svd[size_t(l)][size_t(s)] = lorc_svd(dense.data(), C, d);
      cond[size_t(s)].push_back(svd[size_t(l)][size_t(s)].condition());
    }
  }
  if (!opt.keys && !opt.values) fail("calibrate --method lorc: no stream to compress");
  const std::array<std::vector<int64_t>, 2> ranks = {lorc_ranks(cond[0], opt.keys ? opt.keep : 1.0, opt.progressive, C),
                                                     lorc_ranks(cond[1], opt.values ? opt.keep : 1.0, opt.progressive, C)};
  LorcPlan plan;
  plan.model = model_fingerprint(cfg.arch, model.meta_hash(), model.kv_shape(1));
  plan.layers.resize(size_t(cfg.n_layers));
  std::string rows;
  for (int l = 0; l < cfg.n_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    for (int s = 0; s < 2; ++s) {
      const std::vector<float>& b = s == 0 ? w.bk : w.bv;
      plan.layers[size_t(l)][size_t(s)] = lorc_stream(svd[size_t(l)][size_t(s)], ranks[size_t(s)][size_t(l)], b.empty() ? nullptr : b.data());
    }
    rows += fmt::format("{}{{\"layer\": {}, \"key_rank\": {}, \"value_rank\": {}, \"key_condition\": {:.6g}, "
                        "\"value_condition\": {:.6g}, \"key_energy_kept\": {:.6f}, \"value_energy_kept\": {:.6f}}}",
                        l == 0 ? "" : ", ", l, ranks[0][size_t(l)], ranks[1][size_t(l)], cond[0][size_t(l)], cond[1][size_t(l)],
                        lorc_energy_kept(svd[size_t(l)][0], ranks[0][size_t(l)]),
                        lorc_energy_kept(svd[size_t(l)][1], ranks[1][size_t(l)]));
  }
  const double bits = 16.0 * double(plan.latent_width()) / double(2 * C * cfg.n_layers);
  plan.notes = fmt::format("{{\"method\": \"lorc\", \"keep\": {}, \"schedule\": \"{}\", \"streams\": \"{}\", \"bits_per_value\": {:.6f}, \"layers\": [{}]}}",
                           opt.keep, opt.progressive ? "progressive" : "uniform",
                           opt.keys && opt.values ? "both" : opt.keys ? "keys" : "values", bits, rows);
  return plan;
}

std::vector<std::array<double, 2>> lorc_projection_error(const LorcPlan& plan, const KvSamples& samples) {
  const int64_t C = plan.model.kv_width;
  AQUAKV_CHECK(samples.width == C && samples.n_layers == plan.model.n_layers);
  std::vector<std::array<double, 2>> out(size_t(C > 0 ? samples.n_layers : 0));
  std::vector<float> x(static_cast<size_t>(C)), c;
  for (int64_t l = 0; l < samples.n_layers; ++l)
    for (int s = 0; s < 2; ++s) {
      const LorcStream& st = plan.layers[size_t(l)][size_t(s)];
      const std::vector<uint16_t>& rows = s == 0 ? samples.k[size_t(l)] : samples.v[size_t(l)];
      const int64_t n = int64_t(rows.size()) / C, r = st.rank;
      c.resize(size_t(r));
      double err = 0.0, all = 0.0;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t i = 0; i < C; ++i) x[size_t(i)] = fp16_to_fp32(rows[size_t(t * C + i)]);
        for (int64_t j = 0; j < r; ++j) {
          double a = 0.0;
          for (int64_t i = 0; i < C; ++i) a += double(x[size_t(i)] - st.offset[size_t(i)]) * double(st.basis[size_t(i * r + j)]);
          c[size_t(j)] = fp16_to_fp32(fp32_to_fp16(float(a)));
        }
        for (int64_t i = 0; i < C; ++i) {
          double y = st.offset[size_t(i)];
          for (int64_t j = 0; j < r; ++j) y += double(c[size_t(j)]) * double(st.basis[size_t(i * r + j)]);
          err += (y - x[size_t(i)]) * (y - x[size_t(i)]);
          all += double(x[size_t(i)]) * double(x[size_t(i)]);
        }
      }
      out[size_t(l)][size_t(s)] = all > 0.0 ? err / all : 0.0;
    }
  return out;
}

void lorc_center_on(LorcPlan& plan, const KvSamples& samples) {
  const int64_t C = plan.model.kv_width;
  AQUAKV_CHECK(samples.width == C && samples.n_layers == plan.model.n_layers);
  for (int64_t l = 0; l < samples.n_layers; ++l)
    for (int s = 0; s < 2; ++s) {
      const std::vector<uint16_t>& rows = s == 0 ? samples.k[size_t(l)] : samples.v[size_t(l)];
      const int64_t n = int64_t(rows.size()) / C;
      if (n == 0) continue;
      std::vector<double> mean(static_cast<size_t>(C), 0.0);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < C; ++i) mean[size_t(i)] += fp16_to_fp32(rows[size_t(t * C + i)]);
      LorcStream& st = plan.layers[size_t(l)][size_t(s)];
      for (int64_t i = 0; i < C; ++i) st.offset[size_t(i)] = float(mean[size_t(i)] / double(n));
    }
}

}  // namespace aquakv
