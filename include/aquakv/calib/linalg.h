// Dense symmetric linear algebra in double for predictor fitting (LAPACK from OpenBLAS).
// Owns: the guarded solve of A X = B for symmetric positive semi-definite A and the symmetric
// eigendecomposition. Not: what the matrices mean (calib/ridge.h).
#pragma once

#include <cstdint>
#include <vector>

namespace aquakv {

// How solve_spd solved the system.
enum class SolveMethod { kCholesky, kEigen };

// Solves A X = B, A (n, n) symmetric (row-major, both triangles valid), B (n, m) row-major;
// returns X (n, m). Tries Cholesky; when A is not numerically positive definite falls back to
// the pseudo-inverse from the eigendecomposition (eigenvalues below n * eps * max|eigenvalue| are
// treated as zero). `method` (optional) reports which path ran.
std::vector<double> solve_spd(int64_t n, std::vector<double> a, const std::vector<double>& b,
                              int64_t m, SolveMethod* method = nullptr);

// Eigendecomposition of symmetric A (n, n): eigenvalues ascending in `values`, eigenvectors as
// the columns of `vectors` (n, n) row-major (vectors[i*n + j] = component i of vector j).
void eigh(int64_t n, const std::vector<double>& a, std::vector<double>& values,
          std::vector<double>& vectors);

}  // namespace aquakv
