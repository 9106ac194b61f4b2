// LAPACK (Fortran interface, provided by OpenBLAS) behind calib/linalg.h. Row-major symmetric
// matrices are their own transposes, so they pass to column-major LAPACK unchanged; right-hand
// sides are transposed explicitly.
#include "aquakv/calib/linalg.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "aquakv/util/error.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* lda,
             double* b, const int* ldb, int* info);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
             double* w, double* work, const int* lwork, int* iwork, const int* liwork,
             int* info);
}

namespace aquakv {
namespace {

int to_int(int64_t n) {
  if (n < 0 || n > std::numeric_limits<int>::max() / 64) fail("linalg: dimension {} too large", n);
  return int(n);
}

bool all_finite(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [](double v) { return std::isfinite(v); });
}

}  // namespace

void eigh(int64_t n64, const std::vector<double>& a, std::vector<double>& values,
          std::vector<double>& vectors) {
  const int n = to_int(n64);
  // Column-major result: column j of the LAPACK array is eigenvector j; transpose to row-major.
  std::vector<double> cm = a;
  values.assign(size_t(n), 0.0);
  int lwork = -1, liwork = -1, info = 0;
  double wq = 0;
  int iq = 0;
  dsyevd_("V", "U", &n, cm.data(), &n, values.data(), &wq, &lwork, &iq, &liwork, &info);
  lwork = std::max(1, int(wq));
  liwork = std::max(1, iq);
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevd_("V", "U", &n, cm.data(), &n, values.data(), work.data(), &lwork, iwork.data(), &liwork,
          &info);
  if (info != 0) fail("linalg: eigendecomposition failed (dsyevd info {})", info);
  vectors.assign(size_t(n) * size_t(n), 0.0);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) vectors[size_t(i) * n + j] = cm[size_t(j) * n + i];
}

std::vector<double> solve_spd(int64_t n64, std::vector<double> a, const std::vector<double>& b,
                              int64_t m64, SolveMethod* method) {
  const int n = to_int(n64), m = to_int(m64);
  std::vector<double> x(size_t(n) * size_t(m));
  if (n == 0 || m == 0) return x;
  const std::vector<double> a_orig = a;
  int info = 0;
  if (all_finite(a) && all_finite(b)) {
    dpotrf_("U", &n, a.data(), &n, &info);
    // A pivot tiny relative to the largest diagonal means A is numerically singular: the
    // Cholesky solve would amplify rounding, so take the pseudo-inverse path instead.
    double dmax = 0, dmin = std::numeric_limits<double>::infinity();
    if (info == 0) {
      for (int i = 0; i < n; ++i) {
        const double d = a[size_t(i) * n + i];
        dmax = std::max(dmax, d * d);
        dmin = std::min(dmin, d * d);
      }
    }
    if (info == 0 && dmin > dmax * 1e-13) {
      // Column-major B^T: (n, m) col-major == transpose of row-major (n, m).
      std::vector<double> bt(size_t(n) * size_t(m));
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) bt[size_t(j) * n + i] = b[size_t(i) * m + j];
      dpotrs_("U", &n, &m, a.data(), &n, bt.data(), &n, &info);
      if (info == 0 && all_finite(bt)) {
        for (int i = 0; i < n; ++i)
          for (int j = 0; j < m; ++j) x[size_t(i) * m + j] = bt[size_t(j) * n + i];
        if (method != nullptr) *method = SolveMethod::kCholesky;
        return x;
      }
    }
  } else {
    fail("linalg: non-finite entries in the normal equations");
  }
  // Pseudo-inverse: X = V diag(1/w_i, w_i > tol) V^T B.
  std::vector<double> w, v;
  eigh(n, a_orig, w, v);
  double wmax = 0;
  for (double e : w) wmax = std::max(wmax, std::abs(e));
  const double tol = double(n) * std::numeric_limits<double>::epsilon() * wmax;
  std::vector<double> vtb(size_t(n) * size_t(m), 0.0);  // (n, m) = V^T B scaled
  for (int k = 0; k < n; ++k) {
    if (!(w[size_t(k)] > tol)) continue;
    const double inv = 1.0 / w[size_t(k)];
    double* row = &vtb[size_t(k) * m];
    for (int i = 0; i < n; ++i) {
      const double vik = v[size_t(i) * n + k];
      const double* bi = &b[size_t(i) * m];
      for (int j = 0; j < m; ++j) row[j] += vik * bi[j];
    }
    for (int j = 0; j < m; ++j) row[j] *= inv;
  }
  for (int i = 0; i < n; ++i) {
    double* xi = &x[size_t(i) * m];
    for (int k = 0; k < n; ++k) {
      const double vik = v[size_t(i) * n + k];
      if (vik == 0) continue;
      const double* row = &vtb[size_t(k) * m];
      for (int j = 0; j < m; ++j) xi[j] += vik * row[j];
    }
  }
  if (method != nullptr) *method = SolveMethod::kEigen;
  return x;
}

}  // namespace aquakv
