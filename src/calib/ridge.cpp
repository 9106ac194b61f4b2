#include "aquakv/calib/ridge.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "aquakv/util/error.h"
#include "aquakv/util/check.h"

namespace aquakv {
namespace {
constexpr int64_t kChunk = 2048;  // rows converted to double per BLAS call
}

NormalEquations::NormalEquations(int64_t in, int64_t out)
    : in_(in), out_(out), a_(size_t((in + 1) * (in + 1)), 0.0), b_(size_t((in + 1) * out), 0.0) {}

void NormalEquations::add(int64_t n, const AffineInput* inputs, int n_inputs, const float* y,
                          int64_t ldy) {
  const int64_t d = in_ + 1;
  for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
    const int64_t m = std::min(kChunk, n - r0);
    xs_.resize(size_t(m * d));
    ys_.resize(size_t(m * out_));
    for (int64_t i = 0; i < m; ++i) {
      double* xr = &xs_[size_t(i * d)];
      int64_t c = 0;
      for (int s = 0; s < n_inputs; ++s) {
        const float* src = inputs[s].x + (r0 + i) * inputs[s].ld;
        for (int64_t k = 0; k < inputs[s].k; ++k) xr[c++] = src[k];
      }
      AQUAKV_CHECK(c == in_);
      xr[in_] = 1.0;
      const float* yr = y + (r0 + i) * ldy;
      for (int64_t j = 0; j < out_; ++j) {
        ys_[size_t(i * out_ + j)] = yr[j];
        yy_ += double(yr[j]) * yr[j];
      }
    }
    // A += X1^T X1 (upper triangle), B += X1^T Y.
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(d), int(m), 1.0, xs_.data(), int(d),
                1.0, a_.data(), int(d));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(d), int(out_), int(m), 1.0,
                xs_.data(), int(d), ys_.data(), int(out_), 1.0, b_.data(), int(out_));
    rows_ += m;
  }
  // Mirror the upper triangle so a() is fully symmetric.
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = i + 1; j < d; ++j) a_[size_t(j * d + i)] = a_[size_t(i * d + j)];
}

void NormalEquations::merge(const NormalEquations& o) {
  if (o.in_ != in_ || o.out_ != out_) fail("normal equations: merging {}x{} into {}x{}", o.in_, o.out_, in_, out_);
  for (size_t i = 0; i < a_.size(); ++i) a_[i] += o.a_[i];
  for (size_t i = 0; i < b_.size(); ++i) b_[i] += o.b_[i];
  yy_ += o.yy_;
  rows_ += o.rows_;
}

RidgeFit fit_ridge(const NormalEquations& ne, const RidgeOptions& opt) {
  const int64_t in = ne.in(), out = ne.out(), d = in + 1;
  if (ne.rows() == 0) fail("ridge fit: no rows");
  if (opt.rank < 0 || opt.rank > out) fail("ridge fit: rank {} outside [0, {}]", opt.rank, out);
  RidgeFit fit;
  std::vector<double> a = ne.a();
  double trace = 0;
  for (int64_t i = 0; i < d; ++i) trace += a[size_t(i * d + i)];
  fit.lambda = opt.damping * trace / double(d);
  for (int64_t i = 0; i < d; ++i) a[size_t(i * d + i)] += fit.lambda;
  const std::vector<double> w1 = solve_spd(d, std::move(a), ne.b(), out, &fit.method);

  AffineMap& map = fit.map;
  map.in = in;
  map.out = out;
  map.bias.resize(size_t(out));
  if (opt.rank == 0 || opt.rank == out) {
    map.w.resize(size_t(in * out));
    for (int64_t i = 0; i < in * out; ++i) map.w[size_t(i)] = float(w1[size_t(i)]);
    for (int64_t j = 0; j < out; ++j) map.bias[size_t(j)] = float(w1[size_t(in * out + j)]);
    return fit;
  }
  // Reduced rank. Means from the ones column: xbar_i = A[i][in] / n, ybar_j = B[in][j] / n.
  const double nrows = double(ne.rows());
  const auto& A = ne.a();
  const auto& B = ne.b();
  std::vector<double> xbar(static_cast<size_t>(in)), ybar(static_cast<size_t>(out));
  for (int64_t i = 0; i < in; ++i) xbar[size_t(i)] = A[size_t(i * d + in)] / nrows;
  for (int64_t j = 0; j < out; ++j) ybar[size_t(j)] = B[size_t(in * out + j)] / nrows;
  // Sxx = A_xx - n xbar xbar^T; SW = Sxx W (in, out); M = W^T SW (out, out).
  std::vector<double> sxx(size_t(in * in));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t k = 0; k < in; ++k)
      sxx[size_t(i * in + k)] = A[size_t(i * d + k)] - nrows * xbar[size_t(i)] * xbar[size_t(k)];
  std::vector<double> sw(size_t(in * out)), m(size_t(out * out));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(in), int(out), int(in), 1.0,
              sxx.data(), int(in), w1.data(), int(out), 0.0, sw.data(), int(out));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(out), int(out), int(in), 1.0,
              w1.data(), int(out), sw.data(), int(out), 0.0, m.data(), int(out));
  std::vector<double> evals, evecs;
  eigh(out, m, evals, evecs);  // ascending: the top r are the last r columns
  const int64_t r = opt.rank;
  map.rank = r;
  map.u.assign(size_t(in * r), 0.0f);
  map.v.assign(size_t(r * out), 0.0f);
  std::vector<double> vr(size_t(out * r));  // (out, r)
  for (int64_t j = 0; j < out; ++j)
    for (int64_t c = 0; c < r; ++c) vr[size_t(j * r + c)] = evecs[size_t(j * out + (out - 1 - c))];
  std::vector<double> u(size_t(in * r));  // W V_r
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(in), int(r), int(out), 1.0,
              w1.data(), int(out), vr.data(), int(r), 0.0, u.data(), int(r));
  for (int64_t i = 0; i < in * r; ++i) map.u[size_t(i)] = float(u[size_t(i)]);
  for (int64_t c = 0; c < r; ++c)
    for (int64_t j = 0; j < out; ++j) map.v[size_t(c * out + j)] = float(vr[size_t(j * r + c)]);
  // b_r = ybar - xbar U V (with the rounded factors, so the map is what is applied).
  std::vector<double> xu(size_t(r), 0.0);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t c = 0; c < r; ++c) xu[size_t(c)] += xbar[size_t(i)] * map.u[size_t(i * r + c)];
  for (int64_t j = 0; j < out; ++j) {
    double p = 0;
    for (int64_t c = 0; c < r; ++c) p += xu[size_t(c)] * map.v[size_t(c * out + j)];
    map.bias[size_t(j)] = float(ybar[size_t(j)] - p);
  }
  return fit;
}

double sse_from_stats(const NormalEquations& ne, const AffineMap& map) {
  const int64_t in = ne.in(), out = ne.out(), d = in + 1;
  // Dense W1 (d, out) in double from the map.
  std::vector<double> w1(size_t(d * out), 0.0);
  if (map.rank == 0) {
    for (int64_t i = 0; i < in * out; ++i) w1[size_t(i)] = map.w[size_t(i)];
  } else {
    for (int64_t i = 0; i < in; ++i)
      for (int64_t c = 0; c < map.rank; ++c)
        for (int64_t j = 0; j < out; ++j)
          w1[size_t(i * out + j)] += double(map.u[size_t(i * map.rank + c)]) * map.v[size_t(c * out + j)];
  }
  for (int64_t j = 0; j < out; ++j) w1[size_t(in * out + j)] = map.bias[size_t(j)];
  std::vector<double> aw(size_t(d * out));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(d), int(out), int(d), 1.0,
              ne.a().data(), int(d), w1.data(), int(out), 0.0, aw.data(), int(out));
  double t1 = 0, t2 = 0;
  for (int64_t i = 0; i < d * out; ++i) {
    t1 += w1[size_t(i)] * aw[size_t(i)];
    t2 += w1[size_t(i)] * ne.b()[size_t(i)];
  }
  return std::max(0.0, t1 - 2 * t2 + ne.y_sq());
}

void ErrorStats::add(int64_t n, const float* pred, int64_t ldp, const float* y, int64_t ldy,
                     int64_t width) {
  for (int64_t i = 0; i < n; ++i) {
    const float* p = pred + i * ldp;
    const float* t = y + i * ldy;
    for (int64_t j = 0; j < width; ++j) {
      const double e = double(p[j]) - t[j];
      err_sq += e * e;
      y_sq += double(t[j]) * t[j];
    }
  }
  rows += n;
}

double equivalent_bits(double rel_mse) {
  if (rel_mse <= 0) return INFINITY;
  return -std::log(rel_mse) / std::log(4.0);
}

}  // namespace aquakv
