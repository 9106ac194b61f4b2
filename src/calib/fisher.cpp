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

using Mat = std::vector<double>;

Mat zeros(int64_t n) { return Mat(static_cast<size_t>(n), 0.0); }

// Rows [r0, r1) of w as doubles, (r1 - r0, cols).
Mat dequant(const QMatrix& w, int64_t r0, int64_t r1) {
  Mat out(static_cast<size_t>((r1 - r0) * w.cols));
  parallel_for(r1 - r0, [&](int64_t a, int64_t b) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = a; r < b; ++r) {
      dequantize_row(w.type, w.row(r0 + r), row.data(), w.cols);
      std::copy(row.begin(), row.end(), out.begin() + r * w.cols);
    }
  }, 64);
  return out;
}
Mat dequant(const QMatrix& w) { return dequant(w, 0, w.rows); }

// C (n, m) = alpha * op(A) op(B) + beta * C for the three layouts used (N: as stored, T: transposed).
void gemm(bool ta, bool tb, int64_t n, int64_t m, int64_t k, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(n), int(m), int(k),
              alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}
// y (T, rows) = x (T, cols) W^T.
void linear(const Mat& W, int64_t rows, int64_t cols, const double* x, int64_t T, double* y) {
  gemm(false, true, T, rows, cols, 1.0, x, cols, W.data(), cols, 0.0, y, rows);
}
// dx (T, cols) += dy (T, rows) W: the gradient of linear() with respect to x.
void linear_back(const Mat& W, int64_t rows, int64_t cols, const double* dy, int64_t T, double* dx) {
  gemm(false, false, T, cols, rows, 1.0, dy, rows, W.data(), cols, 1.0, dx, cols);
}

void add_bias(double* y, const std::vector<float>& b, int64_t T) {
  const int64_t w = int64_t(b.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < w; ++i) y[t * w + i] += b[size_t(i)];
}

// y = x * r * w per row, r = 1 / sqrt(mean(x^2) + eps) (kept for the backward).
void rms_forward(const Mat& x, const std::vector<float>& w, int64_t T, int64_t d, double eps, Mat& y, Mat& r) {
  y.resize(size_t(T * d));
  r.resize(size_t(T));
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += x[size_t(t * d + i)] * x[size_t(t * d + i)];
      const double rt = 1.0 / std::sqrt(ss / double(d) + eps);
      r[size_t(t)] = rt;
      for (int64_t i = 0; i < d; ++i) y[size_t(t * d + i)] = x[size_t(t * d + i)] * rt * w[size_t(i)];
    }
  });
}

// dx += the gradient through y_i = w_i x_i r(x):  dx_j = r w_j dy_j - r^3 x_j / d * sum_i w_i dy_i x_i.
void rms_backward(const Mat& x, const Mat& r, const std::vector<float>& w, const Mat& dy, int64_t T, int64_t d, Mat& dx) {
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const double* xt = x.data() + t * d;
      const double* gt = dy.data() + t * d;
      const double rt = r[size_t(t)];
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += double(w[size_t(i)]) * gt[i] * xt[i];
      const double c = rt * rt * rt * dot / double(d);
      for (int64_t i = 0; i < d; ++i) dx[size_t(t * d + i)] += rt * double(w[size_t(i)]) * gt[i] - c * xt[i];
    }
  });
}

// Rotates each of the `heads` heads of every row by RoPE at position t (inverse: by -theta,
// which is also the gradient map, as the rotation is orthogonal).
void rope(const RopeTable& tab, Mat& x, int64_t T, int64_t heads, int64_t hd, bool inverse) {
  const RopeParams& p = tab.params();
  const int64_t half = p.n_rot / 2;
  parallel_for(T, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) {
      const float* cs = tab.cos_at(t);
      const float* sn = tab.sin_at(t);
      for (int64_t h = 0; h < heads; ++h) {
        double* xh = x.data() + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t ia = p.type == RopeType::kNormal ? 2 * i : i, ib = p.type == RopeType::kNormal ? 2 * i + 1 : i + half;
          const double c = cs[i], s = inverse ? -double(sn[i]) : double(sn[i]);
          const double x0 = xh[ia], x1 = xh[ib];
          xh[ia] = x0 * c - x1 * s;
          xh[ib] = x0 * s + x1 * c;
        }
      }
    }
  });
}

double silu(double g) { return g / (1.0 + std::exp(-g)); }

struct LayerMats {
  Mat wq, wk, wv, wo, wg, wu, wd;
};

LayerMats load_layer(const LayerWeights& w) {
  return {dequant(w.wq), dequant(w.wk), dequant(w.wv), dequant(w.wo), dequant(w.w_gate), dequant(w.w_up), dequant(w.w_down)};
}

// What one layer's backward needs of its forward (q, k after RoPE).
struct Acts {
  Mat xn, r1, q, k, v, att, x1, xn2, r2, g, u;
};

class Runner {
 public:
  Runner(const Model& m, int64_t T) : m_(m), c_(m.config()), T_(T), rope_(c_.rope) { rope_.ensure(T); }

  // P (T, T) = the causal softmax of scale * q_h k_g^T (zeros above the diagonal).
  void probs(const Acts& a, int64_t h, Mat& P) const {
    const int64_t hd = c_.head_dim, Q = c_.q_width(), C = c_.kv_width(), g = h / (c_.n_heads / c_.n_kv_heads);
    P.resize(size_t(T_ * T_));
    gemm(false, true, T_, T_, hd, double(c_.attn_scale), a.q.data() + h * hd, Q, a.k.data() + g * hd, C, 0.0, P.data(), T_);
    parallel_for(T_, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        double* row = P.data() + i * T_;
        const double mx = *std::max_element(row, row + i + 1);
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += row[j] = std::exp(row[j] - mx);
        for (int64_t j = 0; j <= i; ++j) row[j] /= sum;
        std::fill(row + i + 1, row + T_, 0.0);
      }
    }, 16);
  }

  // x_out = the layer applied to x; a = its intermediates. With p on this layer, one pre-RoPE
  // key or value element moves by p->delta; k_pre / v_out receive the keys and values.
  void forward(int l, const LayerMats& W, const Mat& x, Acts& a, Mat& x_out, const KvPerturbation* p, Mat* k_pre,
               Mat* v_out) const {
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
    Mat P;
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
    Mat hbuf(size_t(T_ * F));
    for (size_t i = 0; i < hbuf.size(); ++i) hbuf[i] = silu(a.g[i]) * a.u[i];
    x_out = a.x1;
    gemm(false, true, T_, d, F, 1.0, hbuf.data(), F, W.wd.data(), F, 1.0, x_out.data(), d);
  }

  // dx: in, dL/d(layer output); out, dL/d(layer input). dk, dv: dL/d(pre-RoPE keys, values).
  void backward(int l, const LayerMats& W, const Mat& x, const Acts& a, Mat& dx, Mat& dk, Mat& dv) const {
    const LayerWeights& lw = m_.layer(l);
    const int64_t d = c_.d_model, Q = c_.q_width(), C = c_.kv_width(), F = c_.n_ff, hd = c_.head_dim;
    // Feed-forward: x2 = x1 + (silu(g) * u) Wd^T.
    Mat dh = zeros(T_ * F);
    gemm(false, false, T_, F, d, 1.0, dx.data(), d, W.wd.data(), F, 0.0, dh.data(), F);
    Mat dg(size_t(T_ * F)), du(size_t(T_ * F));
    for (size_t i = 0; i < dh.size(); ++i) {
      const double sg = 1.0 / (1.0 + std::exp(-a.g[i]));
      du[i] = dh[i] * a.g[i] * sg;
      dg[i] = dh[i] * a.u[i] * sg * (1.0 + a.g[i] * (1.0 - sg));  // silu'(g) = s (1 + g (1 - s))
    }
    Mat dxn2 = zeros(T_ * d);
    linear_back(W.wg, F, d, dg.data(), T_, dxn2.data());
    linear_back(W.wu, F, d, du.data(), T_, dxn2.data());
    Mat dx1 = dx;
    rms_backward(a.x1, a.r2, lw.ffn_norm, dxn2, T_, d, dx1);
    // Attention output projection.
    Mat datt = zeros(T_ * Q);
    linear_back(W.wo, d, Q, dx1.data(), T_, datt.data());
    // Attention, per query head h on KV head g: dP = datt_h v_g^T, dv_g += P^T datt_h,
    // dS = P * (dP - rowsum(P * dP)), dq_h = scale dS k_g, dk_g += scale dS^T q_h.
    Mat dq = zeros(T_ * Q), dkr = zeros(T_ * C);
    dv.assign(size_t(T_ * C), 0.0);
    Mat P, dP(size_t(T_ * T_));
    const double scale = c_.attn_scale;
    for (int64_t h = 0; h < c_.n_heads; ++h) {
      const int64_t g = h / (c_.n_heads / c_.n_kv_heads);
      probs(a, h, P);
      gemm(false, true, T_, T_, hd, 1.0, datt.data() + h * hd, Q, a.v.data() + g * hd, C, 0.0, dP.data(), T_);
      gemm(true, false, T_, hd, T_, 1.0, P.data(), T_, datt.data() + h * hd, Q, 1.0, dv.data() + g * hd, C);
      parallel_for(T_, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const double* pr = P.data() + i * T_;
          double* gr = dP.data() + i * T_;
          double s = 0;
          for (int64_t j = 0; j <= i; ++j) s += pr[j] * gr[j];
          for (int64_t j = 0; j <= i; ++j) gr[j] = pr[j] * (gr[j] - s);
          std::fill(gr + i + 1, gr + T_, 0.0);
        }
      }, 16);
      gemm(false, false, T_, hd, T_, scale, dP.data(), T_, a.k.data() + g * hd, C, 0.0, dq.data() + h * hd, Q);
      gemm(true, false, T_, hd, T_, scale, dP.data(), T_, a.q.data() + h * hd, Q, 1.0, dkr.data() + g * hd, C);
    }
    rope(rope_, dq, T_, c_.n_heads, hd, true);
    rope(rope_, dkr, T_, c_.n_kv_heads, hd, true);
    dk = dkr;
    // Projections and the attention norm.
    Mat dxn = zeros(T_ * d);
    linear_back(W.wq, Q, d, dq.data(), T_, dxn.data());
    linear_back(W.wk, C, d, dk.data(), T_, dxn.data());
    linear_back(W.wv, C, d, dv.data(), T_, dxn.data());
    dx = dx1;
    rms_backward(x, a.r1, lw.attn_norm, dxn, T_, d, dx);
  }

  // Loss of the final normalized rows h (T, d); with dh, also dL/dh. The vocabulary goes in
  // chunks (logits of all of it never exist at once): a first pass finds each row's
  // log-sum-exp, a second forms dL/dlogits = (softmax - onehot) / (T - 1) chunk by chunk.
  double head(const Mat& h, std::span<const int32_t> tokens, Mat* dh) const {
    const int64_t d = c_.d_model, V = c_.n_vocab, N = T_ - 1, chunk = 2048;
    const QMatrix& out = m_.output();
    Mat mx(size_t(T_), -INFINITY), sum(size_t(T_), 0.0), tgt(size_t(T_), 0.0), lg;
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      const int64_t nc = std::min(chunk, V - v0);
      const Mat Wc = dequant(out, v0, v0 + nc);
      lg.resize(size_t(T_ * nc));
      linear(Wc, nc, d, h.data(), T_, lg.data());
      parallel_for(T_, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          const double* row = lg.data() + t * nc;
          const double m = std::max(mx[size_t(t)], *std::max_element(row, row + nc));
          double s = sum[size_t(t)] * std::exp(mx[size_t(t)] - m);
          for (int64_t j = 0; j < nc; ++j) s += std::exp(row[j] - m);
          mx[size_t(t)] = m;
          sum[size_t(t)] = s;
          if (t < N && tokens[size_t(t + 1)] >= v0 && tokens[size_t(t + 1)] < v0 + nc) tgt[size_t(t)] = row[tokens[size_t(t + 1)] - v0];
        }
      });
    }
    Mat lse(static_cast<size_t>(T_));
    double loss = 0;
    for (int64_t t = 0; t < T_; ++t) lse[size_t(t)] = mx[size_t(t)] + std::log(sum[size_t(t)]);
    for (int64_t t = 0; t < N; ++t) loss += lse[size_t(t)] - tgt[size_t(t)];
    loss /= double(N);
    if (dh == nullptr) return loss;
    dh->assign(size_t(T_ * d), 0.0);
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      const int64_t nc = std::min(chunk, V - v0);
      const Mat Wc = dequant(out, v0, v0 + nc);
      lg.resize(size_t(T_ * nc));
      linear(Wc, nc, d, h.data(), T_, lg.data());
      parallel_for(T_, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          double* row = lg.data() + t * nc;
          if (t >= N) { std::fill(row, row + nc, 0.0); continue; }
          for (int64_t j = 0; j < nc; ++j) row[j] = std::exp(row[j] - lse[size_t(t)]) / double(N);
          const int64_t y = tokens[size_t(t + 1)] - v0;
          if (y >= 0 && y < nc) row[y] -= 1.0 / double(N);
        }
      });
      linear_back(Wc, nc, d, lg.data(), T_, dh->data());
    }
    return loss;
  }

  Mat embed(std::span<const int32_t> tokens) const {
    const int64_t d = c_.d_model;
    Mat x(size_t(T_ * d));
    std::vector<float> row(static_cast<size_t>(d));
    for (int64_t t = 0; t < T_; ++t) {
      dequantize_row(m_.tok_embd().type, m_.tok_embd().row(tokens[size_t(t)]), row.data(), d);
      std::copy(row.begin(), row.end(), x.begin() + t * d);
    }
    return x;
  }

 private:
  // x += y W^T for y (T, cols), W (rows, cols): the attention output projection.
  void linear_add(const Mat& W, int64_t rows, int64_t cols, const double* y, Mat& x) const {
    gemm(false, true, T_, rows, cols, 1.0, y, cols, W.data(), cols, 1.0, x.data(), rows);
  }

  const Model& m_;
  const ModelConfig& c_;
  int64_t T_;
  RopeTable rope_;
};

}  // namespace

KvGradientModel::KvGradientModel(const Model& model) : model_(model) {
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

double KvGradientModel::run(std::span<const int32_t> tokens, const KvPerturbation* p, KvGradients* g) const {
  const ModelConfig& c = model_.config();
  const int64_t T = int64_t(tokens.size()), d = c.d_model, C = c.kv_width(), L = c.n_layers;
  if (T < 2) fail("fisher: a window needs at least 2 tokens (got {})", T);
  for (int64_t t = 0; t < T; ++t)
    if (tokens[size_t(t)] < 0 || tokens[size_t(t)] >= c.n_vocab)
      fail("fisher: token id {} at index {} is outside the vocabulary [0, {})", tokens[size_t(t)], t, c.n_vocab);
  if (p != nullptr && (p->layer < 0 || p->layer >= L || p->token < 0 || p->token >= T || p->channel < 0 || p->channel >= C))
    fail("fisher: perturbation (layer {}, token {}, channel {}) outside the run", p->layer, p->token, p->channel);
  Runner run(model_, T);
  Mat x = run.embed(tokens), next;
  std::vector<Mat> inputs;
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
    const LayerMats W = load_layer(model_.layer(l));
    Acts a;
    run.forward(l, W, x, a, next, p, g ? &g->k[size_t(l)] : nullptr, g ? &g->v[size_t(l)] : nullptr);
    if (g != nullptr) inputs[size_t(l)] = std::move(x);
    x = std::move(next);
  }
  Mat h, r;
  rms_forward(x, model_.output_norm(), T, d, c.norm_eps, h, r);
  Mat dh;
  const double loss = run.head(h, tokens, g ? &dh : nullptr);
  if (g == nullptr) return loss;
  Mat dx = zeros(T * d);
  rms_backward(x, r, model_.output_norm(), dh, T, d, dx);
  for (int l = int(L) - 1; l >= 0; --l) {
    const LayerMats W = load_layer(model_.layer(l));
    Acts a;
    run.forward(l, W, inputs[size_t(l)], a, next, nullptr, nullptr, nullptr);
    run.backward(l, W, inputs[size_t(l)], a, dx, g->dk[size_t(l)], g->dv[size_t(l)]);
    Mat().swap(inputs[size_t(l)]);
  }
  return loss;
}

}  // namespace aquakv
