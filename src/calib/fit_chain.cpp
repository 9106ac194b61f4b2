#include "aquakv/calib/fit_chain.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "aquakv/calib/ridge.h"
#include "aquakv/quant/channel_scaled_codec.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

void to_floats(const std::vector<uint16_t>& h, std::vector<float>& f) {
  f.resize(h.size());
  parallel_for(int64_t(h.size()), [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) f[size_t(i)] = fp16_to_fp32(h[size_t(i)]);
  }, 4096);
}

// recon := codec round trip of (target - recon) added to recon (recon holds the prediction), or
// of target when there is no prediction. Same expression as the cache's encoder.
void quantize_rows(const Codec& c, const std::vector<float>& target, bool predicted,
                   std::vector<float>& recon, int64_t rows) {
  const int64_t C = c.dim();
  parallel_for(rows, [&](int64_t r0, int64_t r1) {
    const int64_t n = r1 - r0;
    std::vector<float> x(size_t(n * C)), dec(size_t(n * C));
    std::vector<uint8_t> codes(size_t(c.encoded_bytes(n)));
    for (int64_t i = 0; i < n * C; ++i) {
      const size_t at = size_t(r0 * C + i);
      x[size_t(i)] = predicted ? target[at] - recon[at] : target[at];
    }
    c.encode(x.data(), n, codes.data());
    c.decode(codes.data(), n, dec.data());
    for (int64_t i = 0; i < n * C; ++i) {
      const size_t at = size_t(r0 * C + i);
      recon[at] = predicted ? recon[at] + dec[size_t(i)] : dec[size_t(i)];
    }
  }, 256);
}

double rel_err(const std::vector<float>& pred, const std::vector<float>& y, int64_t r0, int64_t r1, int64_t C) {
  ErrorStats e;
  e.add(r1 - r0, pred.data() + r0 * C, C, y.data() + r0 * C, C, C);
  return e.rel_mse();
}

// Fits one stream: predictor on the training rows, then prediction on all rows into `recon`.
AffineMap fit_stream(const AffineInput* in, int n_in, int64_t in_width, const std::vector<float>& y,
                     int64_t n_train, int64_t rows, int64_t C, const ChainOptions& opt, int64_t rank,
                     std::vector<float>& recon, double& train_rel, double& val_rel) {
  NormalEquations ne(in_width, C);
  ne.add(n_train, in, n_in, y.data(), C);
  const RidgeFit fit = fit_ridge(ne, {opt.damping, rank});
  std::vector<float> scratch;
  fit.map.apply(rows, in, n_in, recon.data(), C, scratch);
  train_rel = rel_err(recon, y, 0, n_train, C);
  val_rel = rows > n_train ? rel_err(recon, y, n_train, rows, C) : train_rel;
  return fit.map;
}

// Layer l's codec of a stream: the plan's entry, else the stream's default.
const Codec& codec_of(const std::vector<std::shared_ptr<const Codec>>& plan, int64_t l, const Codec& dflt) {
  return !plan.empty() && plan[size_t(l)] ? *plan[size_t(l)] : dflt;
}

}  // namespace

std::vector<float> channel_scales(const std::vector<float>& y, const std::vector<float>& pred, int64_t n_train,
                                  int64_t C, const std::vector<double>* w) {
  std::vector<double> ms(static_cast<size_t>(C), 0.0);
  for (int64_t r = 0; r < n_train; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double e = double(y[size_t(r * C + c)]) - double(pred[size_t(r * C + c)]);
      ms[size_t(c)] += e * e;
    }
  const double smax = std::sqrt(*std::max_element(ms.begin(), ms.end()) / double(n_train));
  const double wmax = w ? *std::max_element(w->begin(), w->end()) : 1.0;
  std::vector<double> logs(static_cast<size_t>(C));
  double mean_log = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double sigma = std::max(std::sqrt(ms[size_t(c)] / double(n_train)), 1e-6 * smax + 1e-30);
    const double wc = w ? std::max((*w)[size_t(c)], 1e-6 * wmax + 1e-30) : 1.0;
    logs[size_t(c)] = 0.5 * (0.5 * std::log(wc) - std::log(sigma));
    mean_log += logs[size_t(c)] / double(C);
  }
  std::vector<float> s(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) s[size_t(c)] = float(std::exp(logs[size_t(c)] - mean_log));
  return s;
}

std::vector<LayerPredictors> fit_chain(const KvSamples& d, const ChainOptions& opt,
                                       std::vector<LayerFitStats>* stats,
                                       const std::function<void(int, int)>& progress) {
  const int64_t L = d.n_layers, C = d.width, rows = d.rows();
  if (L < 1 || C < 1 || d.n_train < 1) fail("calibrate: no calibration rows");
  if (int64_t(d.k.size()) != L || int64_t(d.v.size()) != L) fail("calibrate: samples for {} layers, expected {}", d.k.size(), L);
  std::vector<const Codec*> all = {opt.key_codec.get(), opt.value_codec.get(), opt.layer0_codec.get()};
  for (auto* list : {&opt.layer_key_codecs, &opt.layer_value_codecs}) {
    if (!list->empty() && int64_t(list->size()) != L) fail("calibrate: {} per-layer codecs for {} layers", list->size(), L);
    for (const auto& c : *list)
      if (c) all.push_back(c.get());
  }
  for (const Codec* c : all) {
    if (!c) fail("calibrate: key, value and layer-0 codecs are required");
    if (c->dim() != C) fail("calibrate: codec {} is for width {}, the model's KV width is {}", c->spec(), c->dim(), C);
    if (c->block_rows() != 1) fail("calibrate: codec {} groups tokens ({} rows); AQUA-KV needs a per-token codec", c->spec(), c->block_rows());
  }
  const int64_t key_rank = opt.key_rank_or_default(), value_rank = opt.value_rank_or_default();
  for (int64_t r : {key_rank, value_rank})
    if (r < 0 || r > C) fail("calibrate: rank {} outside [0, {}]", r, C);
  std::vector<LayerPredictors> out(static_cast<size_t>(L));
  if (stats) stats->clear();
  std::vector<float> yk, yv, kh_prev, vh_prev, kh, vh;
  for (int64_t l = 0; l < L; ++l) {
    const auto t0 = std::chrono::steady_clock::now();
    LayerFitStats st;
    st.layer = int(l);
    to_floats(d.k[size_t(l)], yk);
    to_floats(d.v[size_t(l)], yv);
    kh.assign(size_t(rows * C), 0.f);
    vh.assign(size_t(rows * C), 0.f);
    const bool pk = l > 0 && opt.fit_keys, pv = l > 0 && opt.fit_values;
    if (pk) {
      const AffineInput in[2] = {{kh_prev.data(), C, C}, {vh_prev.data(), C, C}};
      const int n_in = opt.wide_keys ? 2 : 1;
      out[size_t(l)].key = fit_stream(in, n_in, n_in * C, yk, d.n_train, rows, C, opt, key_rank, kh, st.k_train, st.k_val);
    }
    if (l > 0 && opt.on_residual) opt.on_residual(int(l), true, yk, kh);
    const Codec* kcod = l == 0 ? opt.layer0_codec.get() : &codec_of(opt.layer_key_codecs, l, *opt.key_codec);
    const Codec* vcod = l == 0 ? opt.layer0_codec.get() : &codec_of(opt.layer_value_codecs, l, *opt.value_codec);
    std::shared_ptr<const Codec> kscaled, vscaled;
    if (l > 0 && opt.scale_keys) {
      const bool qw = !d.q2.empty() && d.q_rows > 0;
      std::vector<double> w;
      if (qw) for (double x : d.q2[size_t(l)]) w.push_back(x / double(d.q_rows));
      auto& s = out[size_t(l)].key_scale = channel_scales(yk, kh, d.n_train, C, qw ? &w : nullptr);
      kscaled = std::make_shared<ChannelScaledCodec>(std::shared_ptr<const Codec>(kcod, [](const Codec*) {}), s);
      kcod = kscaled.get();
    }
    st.k_codec = kcod->spec();
    quantize_rows(*kcod, yk, pk, kh, rows);
    if (pv) {
      const AffineInput in[3] = {{kh.data(), C, C}, {vh_prev.data(), C, C}, {kh_prev.data(), C, C}};
      const int n_in = opt.wide_values ? 3 : 2;
      out[size_t(l)].value = fit_stream(in, n_in, n_in * C, yv, d.n_train, rows, C, opt, value_rank, vh, st.v_train, st.v_val);
    }
    if (l > 0 && opt.on_residual) opt.on_residual(int(l), false, yv, vh);
    if (l > 0 && opt.scale_values) {
      const bool ow = !d.wo2.empty();
      auto& s = out[size_t(l)].value_scale = channel_scales(yv, vh, d.n_train, C, ow ? &d.wo2[size_t(l)] : nullptr);
      vscaled = std::make_shared<ChannelScaledCodec>(std::shared_ptr<const Codec>(vcod, [](const Codec*) {}), s);
      vcod = vscaled.get();
    }
    st.v_codec = vcod->spec();
    quantize_rows(*vcod, yv, pv, vh, rows);
    const int64_t v0 = d.n_val > 0 ? d.n_train : 0;
    st.k_recon_val = rel_err(kh, yk, v0, rows, C);
    st.v_recon_val = rel_err(vh, yv, v0, rows, C);
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (stats) stats->push_back(st);
    if (opt.on_layer) opt.on_layer(int(l), kh, vh);
    std::swap(kh_prev, kh);
    std::swap(vh_prev, vh);
    if (progress) progress(int(l + 1), int(L));
  }
  return out;
}

}  // namespace aquakv
