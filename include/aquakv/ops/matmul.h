// Matrix products with GGUF-format weights. Owns: QMatrix (a view of a quantized weight matrix
// in the mapped file) and y = x * W^T for n activation rows, with two strategies:
//  * dot path (decode, small n): each weight row is dotted directly on its quantized blocks
//    (ops/qdot.h), rows split over threads; the integer types quantize x to 8 bits first.
//  * gemm path (prefill): a tile of weight rows is dequantized into per-thread f32 scratch and
//    multiplied by all n rows with OpenBLAS sgemm; the whole matrix is never held in f32.
// Not: the weights' ownership (the GGUF mapping) or model structure (engine/).
#pragma once

#include <cstdint>

#include "aquakv/ops/ggml_types.h"

namespace aquakv {

// A (rows x cols) weight matrix in GGUF layout: row r's cols values start at data + r*row_bytes.
struct QMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_bytes = 0;
  const uint8_t* data = nullptr;
  // Rows [0, rows - rows % 16) repacked into 16-row groups (ops/qpack.h), or null. When set, the
  // dot and gemm paths read only the packed copy (rows past the last full group: `data`).
  const uint8_t* packed = nullptr;
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
  int64_t packed_rows() const { return packed != nullptr ? rows / 16 * 16 : 0; }
};

enum class MatmulPath {
  kAuto,  // dot path for n < matmul_gemm_min_rows(), else gemm
  kDot,
  kGemm,
};

// Number of activation rows from which kAuto takes the gemm path.
int64_t matmul_gemm_min_rows();

// y (n x w.rows, row-major) = x (n x w.cols, row-major) * W^T. Threads: parallel_for.
void matmul(const QMatrix& w, const float* x, int64_t n, float* y,
            MatmulPath path = MatmulPath::kAuto);

// ys[i] (n x ws[i]->rows) = x * W_i^T for k matrices of the same cols, in one parallel region
// on the dot path (decode: q, k and v share the normalized row), so one barrier serves all k
// and x is quantized once. Bit-identical to k matmul calls with the same path.
void matmul_many(const QMatrix* const* ws, float* const* ys, int k, const float* x, int64_t n,
                 MatmulPath path = MatmulPath::kAuto);

// h (n x gate.rows) = silu(x Wg^T) * (x Wu^T), the SwiGLU input of the feed-forward block. On
// the dot path each thread computes its rows of both products and their SwiGLU in one region;
// u_scratch (n x up.rows) receives x Wu^T. On the gemm path u_scratch is not used: x Wu^T is
// made a weight tile at a time in per-thread scratch and applied to h at once. Bit-identical to
// two matmuls and ops/nn.h swiglu.
void matmul_swiglu(const QMatrix& gate, const QMatrix& up, const float* x, int64_t n, float* h,
                   float* u_scratch, MatmulPath path = MatmulPath::kAuto);

// Reference: dequantize_row + float64 sums, single thread. For tests.
void matmul_ref(const QMatrix& w, const float* x, int64_t n, float* y);

// Runs `fn` with OpenBLAS limited to one thread (restoring num_threads() after), for sgemm calls
// made from inside parallel_for workers.
template <typename Fn>
void with_single_threaded_blas(Fn&& fn);

namespace detail {
void blas_threads_single(bool single);
}

template <typename Fn>
void with_single_threaded_blas(Fn&& fn) {
  detail::blas_threads_single(true);
  fn();
  detail::blas_threads_single(false);
}

}  // namespace aquakv
