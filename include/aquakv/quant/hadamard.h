// Hadamard rotations. Owns: the unnormalised Walsh-Hadamard transform H_n (entries +-1,
// H_n H_n^T = n I) for n = 2^k (k <= 16, Sylvester order: H[a][b] = (-1)^popcount(a&b)) and the
// Kronecker forms H_12 (x) H_m and H_20 (x) H_m (m = 2^k) for widths such as 192 = 12 x 16 and
// 320 = 20 x 16 that need no padding; optional seeded random sign flips; scalar reference and
// AVX2 and AVX-512 kernels. Not: scaling/quantization (codecs do that).
#pragma once

#include <cstdint>
#include <vector>

namespace aquakv {

// True when n is a supported order: 2^k (0 <= k <= 16), or 12 * 2^k or 20 * 2^k (<= 65536).
bool hadamard_supported(int64_t n);

// The order-12 or order-20 Hadamard matrix (row-major, entries +-1), symmetric so that every
// transform here is its own inverse up to the factor n: Paley's construction I with q = 11 or 19
// (q = 3 mod 4), P = [[1, 1^T], [-1, Q + I]] with Q[a][b] = chi(b - a) (chi: quadratic character
// mod q), times the signed permutation diag(-1, b -> -b mod q). q must be 11 or 19.
std::vector<int8_t> paley_hadamard(int q);

// In place x <- H_n x for a supported n (asserted). Dispatches on simd_level().
void hadamard_transform(float* x, int64_t n);
// Scalar reference of the same transform (kept forever; tests compare against it).
void hadamard_transform_scalar(float* x, int64_t n);

// A fixed rotation: forward(x) = H_n D x, inverse(y) = D H_n y / n,
// so inverse(forward(x)) = x. D = diag(+-1) from a seeded generator, or I when seed == 0.
// Immutable after construction: safe to share between threads.
class HadamardRotation {
 public:
  // Throws Error when n is not a supported order.
  explicit HadamardRotation(int64_t n, uint64_t sign_seed = 0);

  int64_t size() const { return n_; }
  uint64_t sign_seed() const { return seed_; }
  // rows x n, contiguous, in place: x <- H D x.
  void forward(float* x, int64_t rows = 1) const;
  // rows x n, contiguous, in place: y <- D H y * scale (scale = 1/n gives the exact inverse).
  void inverse(float* y, int64_t rows = 1, float scale = -1.0f) const;

 private:
  int64_t n_;
  int p_ = 0;      // n = p_ * m_, p_ in {1, 12, 20}, m_ a power of two
  int64_t m_ = 0;
  uint64_t seed_;
  std::vector<float> signs_;  // (n) +-1, empty when seed == 0
};

namespace detail {
// Mixing the p rows of a [p][m] block with H_p (p = 12 or 20): y_i = sum_a h_ia x_a is computed
// as T - 2 S_i with T = x_0 + ... + x_{p-1} and S_i the sum of the x_a with h_ia = -1 (increasing
// a, left to right); 2 S_i is exact, so T - 2 S_i rounds once. This halves the work of the
// direct p x p sum. Scalar and AVX2 follow the same order and give identical bits.
struct MixPlan {
  int p = 0;
  int nneg[20] = {};
  int8_t neg[20][20] = {};
};
const MixPlan& mix_plan(int p);
// Sylvester FWHT of size n = 2^k >= 8 (AVX2).
void fwht_pow2_avx2(float* x, int64_t n);
// The mixing above on a [p][m] block, m % 8 == 0 (AVX2).
void hadamard_mix_avx2(const MixPlan& plan, float* x, int64_t m);
// The same two on 16-float registers (hadamard_avx512.cpp), n and m multiples of 16; same
// order, same bits.
void fwht_pow2_avx512(float* x, int64_t n);
void hadamard_mix_avx512(const MixPlan& plan, float* x, int64_t m);
}  // namespace detail

}  // namespace aquakv
