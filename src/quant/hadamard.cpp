// Hadamard transforms: scalar reference, Paley matrices, Kronecker forms and the dispatcher.
// For n = p * m with p in {12, 20} and m = 2^k, viewing x as a [p][m] row-major block,
// (H_p (x) H_m) x = H_p * X * H_m^T: an FWHT of every row followed by mixing the p rows with H_p.
// The rows are mixed in a fixed order (a = 0..p-1, add or subtract), identically in the scalar
// and SIMD paths, so both give bit-identical results.
#include "aquakv/quant/hadamard.h"

#include <cmath>
#include <mutex>

#include "aquakv/quant/gauss_rng.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/error.h"
#include "aquakv/util/check.h"

namespace aquakv {
namespace {

bool is_pow2(int64_t n) { return n >= 1 && (n & (n - 1)) == 0; }

// Splits n into (p, m) with p in {1, 12, 20} and m a power of two; p = 0 when unsupported.
void split_order(int64_t n, int& p, int64_t& m) {
  p = 0;
  m = 0;
  if (n < 1 || n > 65536) return;
  if (is_pow2(n)) { p = 1; m = n; return; }
  if (n % 12 == 0 && is_pow2(n / 12)) { p = 12; m = n / 12; return; }
  if (n % 20 == 0 && is_pow2(n / 20)) { p = 20; m = n / 20; return; }
}

void fwht_pow2_scalar(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}

void hadamard_mix_scalar(const detail::MixPlan& plan, float* x, int64_t m) {
  const int p = plan.p;
  float tmp[20];
  for (int64_t j = 0; j < m; ++j) {
    float t = x[j];
    for (int a = 1; a < p; ++a) t = t + x[a * m + j];
    for (int i = 0; i < p; ++i) {
      float s = 0.0f;
      for (int k = 0; k < plan.nneg[i]; ++k) s = s + x[plan.neg[i][k] * m + j];
      tmp[i] = t - 2.0f * s;
    }
    for (int i = 0; i < p; ++i) x[i * m + j] = tmp[i];
  }
}

// x <- (H_p (x) H_m) x at `level` (scalar: the reference). AVX-512 needs m % 16 == 0, AVX2
// m >= 8; smaller orders fall back to the next level that fits.
void transform_pm(float* x, int p, int64_t m, SimdLevel level) {
  const bool v16 = level >= SimdLevel::kAvx512 && m % 16 == 0;
  const bool v8 = !v16 && level >= SimdLevel::kAvx2 && m >= 8;
  for (int r = 0; r < p; ++r) {
    if (v16) {
      detail::fwht_pow2_avx512(x + r * m, m);
    } else if (v8) {
      detail::fwht_pow2_avx2(x + r * m, m);
    } else {
      fwht_pow2_scalar(x + r * m, m);
    }
  }
  if (p == 1) return;
  const detail::MixPlan& plan = detail::mix_plan(p);
  if (v16) {
    detail::hadamard_mix_avx512(plan, x, m);
  } else if (v8) {
    detail::hadamard_mix_avx2(plan, x, m);
  } else {
    hadamard_mix_scalar(plan, x, m);
  }
}

void transform(float* x, int64_t n, SimdLevel level) {
  int p;
  int64_t m;
  split_order(n, p, m);
  AQUAKV_CHECK(p != 0);
  transform_pm(x, p, m, level);
}

}  // namespace

namespace detail {

const MixPlan& mix_plan(int p) {
  auto make = [](int q) {
    MixPlan plan;
    plan.p = q + 1;
    const auto h = paley_hadamard(q);
    for (int i = 0; i < plan.p; ++i) {
      for (int a = 0; a < plan.p; ++a) {
        if (h[size_t(i * plan.p + a)] < 0) plan.neg[i][plan.nneg[i]++] = int8_t(a);
      }
    }
    return plan;
  };
  static const MixPlan p12 = make(11), p20 = make(19);
  AQUAKV_CHECK(p == 12 || p == 20);
  return p == 12 ? p12 : p20;
}

}  // namespace detail

bool hadamard_supported(int64_t n) {
  int p;
  int64_t m;
  split_order(n, p, m);
  return p != 0;
}

std::vector<int8_t> paley_hadamard(int q) {
  AQUAKV_CHECK(q == 11 || q == 19);
  // chi(a) = +1 if a is a non-zero square mod q, -1 if a non-square, 0 for a = 0.
  std::vector<int> chi(q, -1);
  chi[0] = 0;
  for (int a = 1; a < q; ++a) chi[(a * a) % q] = 1;
  // Paley I: P = [[1, 1^T], [-1, Q + I]], Q[a][b] = chi(b - a), is Hadamard but not symmetric.
  // Multiplying by the signed permutation diag(-1, b -> -b mod q) on the right keeps it Hadamard
  // and makes it symmetric: entry (a, b) of the core becomes chi(-b - a) + [a + b = 0]
  // = -chi(a + b) + [a + b = 0] (chi(-1) = -1 as q = 3 mod 4), the border becomes -1 / +1s.
  const int p = q + 1;
  std::vector<int8_t> h(size_t(p) * p);
  h[0] = -1;
  for (int j = 1; j < p; ++j) h[j] = h[size_t(j) * p] = 1;
  for (int i = 1; i < p; ++i) {
    for (int j = 1; j < p; ++j) {
      const int sum = (i - 1 + j - 1) % q;
      h[size_t(i) * p + j] = int8_t(sum == 0 ? 1 : -chi[sum]);
    }
  }
  return h;
}

void hadamard_transform_scalar(float* x, int64_t n) { transform(x, n, SimdLevel::kScalar); }

void hadamard_transform(float* x, int64_t n) {
  transform(x, n, simd_level());
}

HadamardRotation::HadamardRotation(int64_t n, uint64_t sign_seed) : n_(n), seed_(sign_seed) {
  split_order(n, p_, m_);
  if (p_ == 0) fail("Hadamard order: expected 2^k (<= 65536), 12*2^k or 20*2^k, got {}", n);
  if (sign_seed != 0) {
    SplitMix64 rng(sign_seed);
    signs_.resize(size_t(n));
    for (auto& s : signs_) s = (rng.next() >> 63) ? -1.0f : 1.0f;
  }
}

void HadamardRotation::forward(float* x, int64_t rows) const {
  const SimdLevel level = simd_level();
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * n_;
    if (!signs_.empty()) {
      for (int64_t i = 0; i < n_; ++i) v[i] *= signs_[size_t(i)];
    }
    transform_pm(v, p_, m_, level);
  }
}

void HadamardRotation::inverse(float* y, int64_t rows, float scale) const {
  if (scale < 0.0f) scale = 1.0f / float(n_);
  const SimdLevel level = simd_level();
  for (int64_t r = 0; r < rows; ++r) {
    float* v = y + r * n_;
    transform_pm(v, p_, m_, level);
    if (!signs_.empty()) {
      for (int64_t i = 0; i < n_; ++i) v[i] *= signs_[size_t(i)] * scale;
    } else if (scale != 1.0f) {
      for (int64_t i = 0; i < n_; ++i) v[i] *= scale;
    }
  }
}

}  // namespace aquakv
