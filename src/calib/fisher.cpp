// Loss gradients with respect to the KV cache (calib/fisher.h). Row-major double matrices;
// T tokens, d = d_model, Q = n_heads * head_dim, C = KV width, F = n_ff. Matrix products go to
// OpenBLAS dgemm (threaded by -t); per-row loops to parallel_for.
#include "aquakv/calib/fisher.h"

#include <algorithm>
#include <cmath>

#include <cblas.h>

#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/nn.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// R: float or double, the type of every stored matrix and of the matrix products; sums of
// squares, softmax sums and the loss accumulate in double either way.
template <typename R>
using Mat = std::vector<R>;

template <typename R>
Mat<R> zeros(int64_t n) { return Mat<R>(static_cast<size_t>(n), R(0)); }

// Rows [r0, r1) of w as R, (r1 - r0, cols).
template <typename R>
Mat<R> dequant(const QMatrix& w, int64_t r0, int64_t r1) {
  Mat<R> out(static_cast<size_t>((r1 - r0) * w.cols));
  parallel_for(r1 - r0, [&](int64_t a, int64_t b) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = a; r < b; ++r) {
      dequantize_row(w.type, w.row(r0 + r), row.data(), w.cols);
      std::copy(row.begin(), row.end(), out.begin() + r * w.cols);
    }
  }, 64);
  return out;
}
template <typename R>
Mat<R> dequant(const QMatrix& w) { return dequant<R>(w, 0, w.rows); }

// C (n, m) = alpha * op(A) op(B) + beta * C for the three layouts used (N: as stored, T: transposed).
void gemm(bool ta, bool tb, int64_t n, int64_t m, int64_t k, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(n), int(m), int(k),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}
void gemm(bool ta, bool tb, int64_t n, int64_t m, int64_t k, double alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, double beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(n), int(m), int(k),
              float(alpha), A, int(lda), B, int(ldb), float(beta), C, int(ldc));
}
// y (T, rows) = x (T, cols) W^T.
template <typename R>
void linear(const Mat<R>& W, int64_t rows, int64_t cols, const R* x, int64_t T, R* y) {
  gemm(false, true, T, rows, cols, 1.0, x, cols, W.data(), cols, 0.0, y, rows);
}
// dx (T, cols) += dy (T, rows) W: the gradient of linear() with respect to x.
template <typename R>
void linear_back(const Mat<R>& W, int64_t rows, int64_t cols, const R* dy, int64_t T, R* dx) {
  gemm(false, false, T, cols, rows, 1.0, dy, rows, W.data(), cols, 1.0, dx, cols);
}

template <typename R>
void add_bias(R* y, const std::vector<float>& b, int64_t T) {
  const int64_t w = int64_t(b.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < w; ++i) y[t * w + i] += b[size_t(i)];
}

// y = x * r * w per row, r = 1 / sqrt(mean(x^2) + eps) (kept for the backward).
template <typename R>
void rms_forward(const Mat<R>& x, const std::vector<float>& w, int64_t T, int64_t d, double eps, Mat<R>& y, Mat<R>& r) {
  y.resize(size_t(T * d));
  r.resize(size_t(T));
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += double(x[size_t(t * d + i)]) * double(x[size_t(t * d + i)]);
      const double rt = 1.0 / std::sqrt(ss / double(d) + eps);
      r[size_t(t)] = R(rt);
      for (int64_t i = 0; i < d; ++i) y[size_t(t * d + i)] = R(double(x[size_t(t * d + i)]) * rt * w[size_t(i)]);
    }
  });
}

// dx += the gradient through y_i = w_i x_i r(x):  dx_j = r w_j dy_j - r^3 x_j / d * sum_i w_i dy_i x_i.
template <typename R>
void rms_backward(const Mat<R>& x, const Mat<R>& r, const std::vector<float>& w, const Mat<R>& dy, int64_t T, int64_t d,
                  Mat<R>& dx) {
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const R* xt = x.data() + t * d;
      const R* gt = dy.data() + t * d;
      const double rt = r[size_t(t)];
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += double(w[size_t(i)]) * double(gt[i]) * double(xt[i]);
      const double c = rt * rt * rt * dot / double(d);
      for (int64_t i = 0; i < d; ++i) dx[size_t(t * d + i)] += R(rt * double(w[size_t(i)]) * double(gt[i]) - c * double(xt[i]));
    }
  });
}

// Rotates each of the `heads` heads of every row by RoPE at position t (inverse: by -theta,
// which is also the gradient map, as the rotation is orthogonal).
template <typename R>
void rope(const RopeTable& tab, Mat<R>& x, int64_t T, int64_t heads, int64_t hd, bool inverse) {
  const RopeParams& p = tab.params();
  const int64_t half = p.n_rot / 2;
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const float* cs = tab.cos_at(t);
      const float* sn = tab.sin_at(t);
      for (int64_t h = 0; h < heads; ++h) {
        R* xh = x.data() + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t ia = p.type == RopeType::kNormal ? 2 * i : i, ib = p.type == RopeType::kNormal ? 2 * i + 1 : i + half;
          const double c = cs[i], s = inverse ? -double(sn[i]) : double(sn[i]);
          const double x0 = xh[ia], x1 = xh[ib];
          xh[ia] = R(x0 * c - x1 * s);
          xh[ib] = R(x0 * s + x1 * c);
        }
      }
    }
  });
}

double silu(double g) { return g / (1.0 + std::exp(-g)); }

template <typename R>
struct LayerMats {
  Mat<R> wq, wk, wv, wo, wg, wu, wd;
};

template <typename R>
LayerMats<R> load_layer(const LayerWeights& w) {
  return {dequant<R>(w.wq), dequant<R>(w.wk),     dequant<R>(w.wv),    dequant<R>(w.wo),
          dequant<R>(w.w_gate), dequant<R>(w.w_up), dequant<R>(w.w_down)};
}

// What one layer's backward needs of its forward (q, k after RoPE).
template <typename R>
struct Acts {
  Mat<R> xn, r1, q, k, v, att, x1, xn2, r2, g, u;
};

template <typename R>
class Runner {
 public:
  using M = Mat<R>;
  using A = Acts<R>;
  using LM = LayerMats<R>;

  Runner(const Model& m, int64_t T) : m_(m), c_(m.config()), T_(T), rope_(c_.rope) { rope_.ensure(T); }

  // P (T, T) = the causal softmax of scale * q_h k_g^T (zeros above the diagonal).
  void probs(const A& a, int64_t h, M& P) const {
    const int64_t hd = c_.head_dim, Q = c_.q_width(), C = c_.kv_width(), g = h / (c_.n_heads / c_.n_kv_heads);
    P.resize(size_t(T_ * T_));
    gemm(false, true, T_, T_, hd, double(c_.attn_scale), a.q.data() + h * hd, Q, a.k.data() + g * hd, C, 0.0, P.data(), T_);
    parallel_for(T_, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        R* row = P.data() + i * T_;
        const double mx = *std::max_element(row, row + i + 1);
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += row[j] = R(std::exp(double(row[j]) - mx));
        for (int64_t j = 0; j <= i; ++j) row[j] = R(row[j] / sum);
        std::fill(row + i + 1, row + T_, R(0));
      }
    }, 16);
  }

  // x_out = the layer applied to x; a = its intermediates. With p on this layer, one pre-RoPE
  // key or value element moves by p->delta; k_pre / v_out receive the keys and values.
  void forward(int l, const LM& W, const M& x, A& a, M& x_out, const KvPerturbation* p, M* k_pre,
               M* v_out) const {
    const LayerWeights& lw = m_.layer(l);
    const int64_t d = c_.d_model, Q = c_.q_width(), C = c_.kv_width(), F = c_.n_ff, hd = c_.head_dim;
    rms_forward(x, lw.attn_norm, T_, d, c_.norm_eps, a.xn, a.r1);
    a.q.resize(size_t(T_ * Q));
    a.k.resize(size_t(T_ * C));
    a.v.resize(size_t(T_ * C));
    linear(W.wq, Q, d, a.xn.data(), T_, a.q.data());
    linear(W.wk, C, d, a.xn.data(), T_, a.k.data());
    linear(W.wv, C, d, a.xn.data(), T_, a.v.data());
    add_bias(a.q.data(), lw.bq, T_);
    add_bias(a.k.data(), lw.bk, T_);
    add_bias(a.v.data(), lw.bv, T_);
    if (p != nullptr && p->layer == l) (p->value ? a.v : a.k)[size_t(p->token * C + p->channel)] += p->delta;
    if (k_pre) *k_pre = a.k;
    if (v_out) *v_out = a.v;
    rope(rope_, a.q, T_, c_.n_heads, hd, false);
    rope(rope_, a.k, T_, c_.n_kv_heads, hd, false);
    a.att.assign(size_t(T_ * Q), 0.0);
    M P;
    for (int64_t h = 0; h < c_.n_heads; ++h) {
      probs(a, h, P);
      const int64_t g = h / (c_.n_heads / c_.n_kv_heads);
      gemm(false, false, T_, hd, T_, 1.0, P.data(), T_, a.v.data() + g * hd, C, 0.0, a.att.data() + h * hd, Q);
    }
    a.x1 = x;
    linear_add(W.wo, d, Q, a.att.data(), a.x1);
    rms_forward(a.x1, lw.ffn_norm, T_, d, c_.norm_eps, a.xn2, a.r2);
    a.g.resize(size_t(T_ * F));
    a.u.resize(size_t(T_ * F));
    linear(W.wg, F, d, a.xn2.data(), T_, a.g.data());
    linear(W.wu, F, d, a.xn2.data(), T_, a.u.data());
    M hbuf(size_t(T_ * F));
    for (size_t i = 0; i < hbuf.size(); ++i) hbuf[i] = R(silu(a.g[i]) * a.u[i]);
    x_out = a.x1;
    gemm(false, true, T_, d, F, 1.0, hbuf.data(), F, W.wd.data(), F, 1.0, x_out.data(), d);
  }

  // dx: in, dL/d(layer output); out, dL/d(layer input). dk, dv: dL/d(pre-RoPE keys, values).
  void backward(int l, const LM& W, const M& x, const A& a, M& dx, M& dk, M& dv) const {
    const LayerWeights& lw = m_.layer(l);
    const int64_t d = c_.d_model, Q = c_.q_width(), C = c_.kv_width(), F = c_.n_ff, hd = c_.head_dim;
    // Feed-forward: x2 = x1 + (silu(g) * u) Wd^T.
    M dh = zeros<R>(T_ * F);
    gemm(false, false, T_, F, d, 1.0, dx.data(), d, W.wd.data(), F, 0.0, dh.data(), F);
    M dg(size_t(T_ * F)), du(size_t(T_ * F));
    for (size_t i = 0; i < dh.size(); ++i) {
      const double gi = a.g[i], sg = 1.0 / (1.0 + std::exp(-gi));
      du[i] = R(dh[i] * gi * sg);
      dg[i] = R(dh[i] * a.u[i] * sg * (1.0 + gi * (1.0 - sg)));  // silu'(g) = s (1 + g (1 - s))
    }
    M dxn2 = zeros<R>(T_ * d);
    linear_back(W.wg, F, d, dg.data(), T_, dxn2.data());
    linear_back(W.wu, F, d, du.data(), T_, dxn2.data());
    M dx1 = dx;
    rms_backward(a.x1, a.r2, lw.ffn_norm, dxn2, T_, d, dx1);
    // Attention output projection.
    M datt = zeros<R>(T_ * Q);
    linear_back(W.wo, d, Q, dx1.data(), T_, datt.data());
    // Attention, per query head h on KV head g: dP = datt_h v_g^T, dv_g += P^T datt_h,
    // dS = P * (dP - rowsum(P * dP)), dq_h = scale dS k_g, dk_g += scale dS^T q_h.
    M dq = zeros<R>(T_ * Q), dkr = zeros<R>(T_ * C);
    dv.assign(size_t(T_ * C), 0.0);
    M P, dP(size_t(T_ * T_));
    const double scale = c_.attn_scale;
    for (int64_t h = 0; h < c_.n_heads; ++h) {
      const int64_t g = h / (c_.n_heads / c_.n_kv_heads);
      probs(a, h, P);
      gemm(false, true, T_, T_, hd, 1.0, datt.data() + h * hd, Q, a.v.data() + g * hd, C, 0.0, dP.data(), T_);
      gemm(true, false, T_, hd, T_, 1.0, P.data(), T_, datt.data() + h * hd, Q, 1.0, dv.data() + g * hd, C);
      parallel_for(T_, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const R* pr = P.data() + i * T_;
          R* gr = dP.data() + i * T_;
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += double(pr[j]) * gr[j];
          for (int64_t j = 0; j <= i; ++j) gr[j] = R(pr[j] * (gr[j] - s));
          std::fill(gr + i + 1, gr + T_, R(0));
        }
      }, 16);
      gemm(false, false, T_, hd, T_, scale, dP.data(), T_, a.k.data() + g * hd, C, 0.0, dq.data() + h * hd, Q);
      gemm(true, false, T_, hd, T_, scale, dP.data(), T_, a.q.data() + h * hd, Q, 1.0, dkr.data() + g * hd, C);
    }
    rope(rope_, dq, T_, c_.n_heads, hd, true);
    rope(rope_, dkr, T_, c_.n_kv_heads, hd, true);
    dk = dkr;
    // Projections and the attention norm.
    M dxn = zeros<R>(T_ * d);
    linear_back(W.wq, Q, d, dq.data(), T_, dxn.data());
    linear_back(W.wk, C, d, dk.data(), T_, dxn.data());
    linear_back(W.wv, C, d, dv.data(), T_, dxn.data());
    dx = dx1;
    rms_backward(x, a.r1, lw.attn_norm, dxn, T_, d, dx);
  }

  // Loss of the final normalized rows h (T, d); with dh, also dL/dh. The vocabulary goes in
  // chunks (logits of all of it never exist at once): a first pass finds each row's
  // log-sum-exp, a second forms dL/dlogits = (softmax - onehot) / (T - 1) chunk by chunk.
  double head(const M& h, std::span<const int32_t> tokens, M* dh) const {
    const int64_t d = c_.d_model, V = c_.n_vocab, N = T_ - 1, chunk = 2048;
    const QMatrix& out = m_.output();
    std::vector<double> mx(size_t(T_), -INFINITY), sum(size_t(T_), 0.0), tgt(size_t(T_), 0.0);
    M lg;
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      const int64_t nc = std::min(chunk, V - v0);
      const M Wc = dequant<R>(out, v0, v0 + nc);
      lg.resize(size_t(T_ * nc));
      linear(Wc, nc, d, h.data(), T_, lg.data());
      parallel_for(T_, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          const R* row = lg.data() + t * nc;
          const double m = std::max(mx[size_t(t)], double(*std::max_element(row, row + nc)));
          double s = sum[size_t(t)] * std::exp(mx[size_t(t)] - m);
          for (int64_t j = 0; j < nc; ++j) s += std::exp(row[j] - m);
          mx[size_t(t)] = m;
          sum[size_t(t)] = s;
          if (t < N && tokens[size_t(t + 1)] >= v0 && tokens[size_t(t + 1)] < v0 + nc) tgt[size_t(t)] = row[tokens[size_t(t + 1)] - v0];
        }
      });
    }
    std::vector<double> lse(static_cast<size_t>(T_));
    double loss = 0;
    for (int64_t t = 0; t < T_; ++t) lse[size_t(t)] = mx[size_t(t)] + std::log(sum[size_t(t)]);
    for (int64_t t = 0; t < N; ++t) loss += lse[size_t(t)] - tgt[size_t(t)];
    loss /= double(N);
    if (dh == nullptr) return loss;
    dh->assign(size_t(T_ * d), 0.0);
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      const int64_t nc = std::min(chunk, V - v0);
      const M Wc = dequant<R>(out, v0, v0 + nc);
      lg.resize(size_t(T_ * nc));
      linear(Wc, nc, d, h.data(), T_, lg.data());
      parallel_for(T_, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          R* row = lg.data() + t * nc;
          if (t >= N) { std::fill(row, row + nc, R(0)); continue; }
          for (int64_t j = 0; j < nc; ++j) row[j] = R(std::exp(double(row[j]) - lse[size_t(t)]) / double(N));
          const int64_t y = tokens[size_t(t + 1)] - v0;
          if (y >= 0 && y < nc) row[y] = R(row[y] - 1.0 / double(N));
        }
      });
      linear_back(Wc, nc, d, lg.data(), T_, dh->data());
    }
    return loss;
  }

  M embed(std::span<const int32_t> tokens) const {
    const int64_t d = c_.d_model;
    M x(size_t(T_ * d));
    std::vector<float> row(static_cast<size_t>(d));
    for (int64_t t = 0; t < T_; ++t) {
      dequantize_row(m_.tok_embd().type, m_.tok_embd().row(tokens[size_t(t)]), row.data(), d);
      std::copy(row.begin(), row.end(), x.begin() + t * d);
    }
    return x;
  }

 private:
  // x += y W^T for y (T, cols), W (rows, cols): the attention output projection.
  void linear_add(const M& W, int64_t rows, int64_t cols, const R* y, M& x) const {
    gemm(false, true, T_, rows, cols, 1.0, y, cols, W.data(), cols, 1.0, x.data(), rows);
  }

  const Model& m_;
  const ModelConfig& c_;
  int64_t T_;
  RopeTable rope_;
};

}  // namespace

KvGradientModel::KvGradientModel(const Model& model, KvGradientPrecision precision)
    : model_(model), precision_(precision) {
  const ModelConfig& c = model.config();
  if (c.qk_norm || c.post_norms || c.gelu_ffn || c.final_logit_softcap > 0 || !c.window.empty() || c.embd_scale != 1.0f)
    fail("fisher: {} models are not supported (the backward pass covers llama-family blocks: RMSNorm, SwiGLU, RoPE, "
         "grouped-query attention)", c.arch);
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0)
    fail("fisher: {} query heads do not group over {} KV heads", c.n_heads, c.n_kv_heads);
}

double KvGradientModel::loss(std::span<const int32_t> tokens, const KvPerturbation* p) const {
  return run(tokens, p, nullptr);
}

KvGradients KvGradientModel::gradients(std::span<const int32_t> tokens) const {
  KvGradients g;
  g.loss = run(tokens, nullptr, &g);
  return g;
}

namespace {

template <typename R>
double run_model(const Model& model_, std::span<const int32_t> tokens, const KvPerturbation* p, KvGradients* g) {
  const ModelConfig& c = model_.config();
  const int64_t T = int64_t(tokens.size()), d = c.d_model, C = c.kv_width(), L = c.n_layers;
  if (T < 2) fail("fisher: a window needs at least 2 tokens (got {})", T);
  for (int64_t t = 0; t < T; ++t)
    if (tokens[size_t(t)] < 0 || tokens[size_t(t)] >= c.n_vocab)
      fail("fisher: token id {} at index {} is outside the vocabulary [0, {})", tokens[size_t(t)], t, c.n_vocab);
  if (p != nullptr && (p->layer < 0 || p->layer >= L || p->token < 0 || p->token >= T || p->channel < 0 || p->channel >= C))
    fail("fisher: perturbation (layer {}, token {}, channel {}) outside the run", p->layer, p->token, p->channel);
  Runner<R> run(model_, T);
  Mat<R> x = run.embed(tokens), next;
  std::vector<Mat<R>> inputs;
  if (g != nullptr) {
    g->n_tokens = T;
    g->width = C;
    g->k.resize(size_t(L));
    g->v.resize(size_t(L));
    g->dk.resize(size_t(L));
    g->dv.resize(size_t(L));
    inputs.resize(size_t(L));
  }
  for (int l = 0; l < L; ++l) {
    const LayerMats<R> W = load_layer<R>(model_.layer(l));
    Acts<R> a;
    Mat<R> k, v;
    run.forward(l, W, x, a, next, p, g ? &k : nullptr, g ? &v : nullptr);
    if (g != nullptr) {
      g->k[size_t(l)].assign(k.begin(), k.end());
      g->v[size_t(l)].assign(v.begin(), v.end());
    }
    if (g != nullptr) inputs[size_t(l)] = std::move(x);
    x = std::move(next);
  }
  Mat<R> h, r;
  rms_forward(x, model_.output_norm(), T, d, c.norm_eps, h, r);
  Mat<R> dh;
  const double loss = run.head(h, tokens, g ? &dh : nullptr);
  if (g == nullptr) return loss;
  Mat<R> dx = zeros<R>(T * d);
  rms_backward(x, r, model_.output_norm(), dh, T, d, dx);
  for (int l = int(L) - 1; l >= 0; --l) {
    const LayerMats<R> W = load_layer<R>(model_.layer(l));
    Acts<R> a;
    Mat<R> dk, dv;
    run.forward(l, W, inputs[size_t(l)], a, next, nullptr, nullptr, nullptr);
    run.backward(l, W, inputs[size_t(l)], a, dx, dk, dv);
    g->dk[size_t(l)].assign(dk.begin(), dk.end());
    g->dv[size_t(l)].assign(dv.begin(), dv.end());
    Mat<R>().swap(inputs[size_t(l)]);
  }
  return loss;
}


}  // namespace

double KvGradientModel::run(std::span<const int32_t> tokens, const KvPerturbation* p, KvGradients* g) const {
  return precision_ == KvGradientPrecision::kFloat32 ? run_model<float>(model_, tokens, p, g)
                                                     : run_model<double>(model_, tokens, p, g);
}

}  // namespace aquakv
