// Dot-path and gemm-path implementations of ops/matmul.h.
#include "aquakv/ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "aquakv/ops/nn.h"
#include "aquakv/ops/qdot.h"
#include "aquakv/ops/qpack.h"
#include "aquakv/util/error.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// Rows of one dequantized tile. sgemm re-packs all n activation rows for every call, so tiles
// must be large for that cost to amortize (small 128 KiB tiles spent ~15% of prefill in the
// packing); they are kept at or below ~1 MiB of f32 each, and their count is a multiple of 4 so
// 1, 2 or 4 threads get equal work. The tiling does not depend on the thread count, so results
// are bit-identical for any number of threads.
int64_t tile_rows(int64_t rows, int64_t cols) {
  const int64_t t = 4;
  const int64_t by_size = std::max<int64_t>(1, (rows * cols * 4 + (1 << 20) - 1) >> 20);
  const int64_t n_tiles = (std::max(t, by_size) + t - 1) / t * t;
  const int64_t tr = (rows + n_tiles - 1) / n_tiles;
  return std::max<int64_t>(16, (tr + 15) / 16 * 16);
}

// Activation rows handed to one multi-row dot (bounds its stack buffer; any count is exact).
constexpr int64_t kRowsAtOnce = 16;

// x quantized to Q8Act blocks when some matrix of a dot-path call needs them. A thread-local
// buffer: a decode step makes a few hundred of these calls, each too small to pay a malloc.
const Q8Act* quantized_x(const float* x, int64_t n, int64_t cols) {
  thread_local std::vector<Q8Act> xq;
  xq.resize(static_cast<size_t>(n * cols / 32));
  for (int64_t t = 0; t < n; ++t) quantize_q8(x + t * cols, xq.data() + t * cols / 32, cols);
  return xq.data();
}

// Rows [r0, r1) of y = x W^T from the packed groups (r1 <= w.packed_rows()). A group the range
// cuts is computed whole into a scratch and its rows in range copied, so every row always gets
// the packed arithmetic whatever the split between threads.
void dot_rows_packed(const QMatrix& w, const Q8Act* xq, int64_t n, float* y, int64_t r0, int64_t r1) {
  const int64_t g_lo = (r0 + kPackRows - 1) / kPackRows, g_hi = r1 / kPackRows;
  if (g_lo < g_hi) qpack_dot(w.type, w.packed, w.cols, g_lo, g_hi, xq, n, y, w.rows);
  const auto partial = [&](int64_t g, int64_t lo, int64_t hi) {
    thread_local std::vector<float> tmp;
    tmp.resize(static_cast<size_t>(n * kPackRows));
    const uint8_t* group = w.packed + g * qpack_group_bytes(w.type, w.cols);
    qpack_dot(w.type, group, w.cols, 0, 1, xq, n, tmp.data(), kPackRows);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = lo; r < hi; ++r) y[t * w.rows + r] = tmp[size_t(t * kPackRows + r - g * kPackRows)];
    }
  };
  if (g_lo > g_hi) {  // the range lies inside one group
    partial(g_hi, r0, r1);
    return;
  }
  if (r0 < g_lo * kPackRows) partial(g_lo - 1, r0, g_lo * kPackRows);
  if (r1 > g_hi * kPackRows) partial(g_hi, g_hi * kPackRows, r1);
}

// Rows [r0, r1) of y = x W^T on the dot path; xq is x quantized (integer-path types only).
void dot_rows(const QMatrix& w, const float* x, const Q8Act* xq, int64_t n, float* y, int64_t r0,
              int64_t r1) {
  const int64_t cols = w.cols;
  if (w.packed != nullptr && r0 < w.packed_rows()) {
    const int64_t split = std::min(r1, w.packed_rows());
    dot_rows_packed(w, xq, n, y, r0, split);
    r0 = split;
    if (r0 >= r1) return;
  }
  if (qdot_uses_q8(w.type)) {
    // Several activation rows (a decode step of several sequences): each weight row is dotted
    // with all n rows at once, so it is read once per call (bit-identical to n single dots).
    if (n == 1) {  // one sequence: the multi-row entry point (see ops/qdot.h)
      qdot_q8_multirow(w.type, w.row(r0), w.row_bytes, r1 - r0, xq, cols, y + r0);
      return;
    }
    float out[kRowsAtOnce];
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t t0 = 0; t0 < n; t0 += kRowsAtOnce) {
        const int64_t m = std::min(kRowsAtOnce, n - t0);
        if (m == 1) {
          out[0] = qdot_q8(w.type, w.row(r), xq + t0 * cols / 32, cols);
        } else {
          qdot_q8_rows(w.type, w.row(r), xq + t0 * cols / 32, cols, m, out);
        }
        for (int64_t t = 0; t < m; ++t) y[(t0 + t) * w.rows + r] = out[t];
      }
    }
  } else {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t t = 0; t < n; ++t) y[t * w.rows + r] = qdot_f32(w.type, w.row(r), x + t * cols, cols);
    }
  }
}

bool any_q8(const QMatrix* const* ws, int k) {
  for (int i = 0; i < k; ++i) {
    if (qdot_uses_q8(ws[i]->type) || ws[i]->packed != nullptr) return true;
  }
  return false;
}

// Row grain of the dot path: ranges of 16 rows keep the claiming overhead of util/parallel
// small against ~16 row dots of work.
constexpr int64_t kDotGrain = 16;

// The k products over one index space of sum(rows) rows: one parallel region for all of them.
void matmul_dot_many(const QMatrix* const* ws, float* const* ys, int k, const float* x,
                     int64_t n) {
  const Q8Act* xq = any_q8(ws, k) ? quantized_x(x, n, ws[0]->cols) : nullptr;
  int64_t total = 0;
  for (int i = 0; i < k; ++i) total += ws[i]->rows;
  parallel_for(total, [&](int64_t a, int64_t b) {
    int64_t base = 0;
    for (int i = 0; i < k && base < b; base += ws[i]->rows, ++i) {
      const int64_t lo = std::max(a, base), hi = std::min(b, base + ws[i]->rows);
      if (lo < hi) dot_rows(*ws[i], x, xq, n, ys[i], lo - base, hi - base);
    }
  }, kDotGrain);
}

void matmul_dot(const QMatrix& w, const float* x, int64_t n, float* y) {
  const QMatrix* ws[1] = {&w};
  float* ys[1] = {y};
  matmul_dot_many(ws, ys, 1, x, n);
}

// Row stride of a dequantized tile: cols rounded up to 16 floats, plus 16 when that is a
// multiple of 1024 bytes. Rows 4 or 8 KiB apart (Gemma's 1024 and 2048 columns) fall into the same
// L1 sets, and the 16 rows a packed group writes at once (and OpenBLAS's reads of them) then
// evict each other; 64 bytes more per row spread them (qpack_dequant_group: 3.2 -> 5 G values/s
// at 2048 columns, bench_dequant BM_tile_direct_*).
int64_t tile_ld(int64_t cols) {
  const int64_t ld = (cols + 15) / 16 * 16;
  return ld % 256 == 0 ? ld + 16 : ld;
}

// Rows [r0, r0+m) of w as floats, row i at out + i*ld; full packed groups come from the packed
// copy so that a repacked matrix's GGUF pages are never read again (no doubled resident weights).
void dequantize_rows(const QMatrix& w, int64_t r0, int64_t m, float* out, int64_t ld) {
  for (int64_t r = r0; r < r0 + m;) {
    if (r % kPackRows == 0 && r + kPackRows <= std::min(r0 + m, w.packed_rows())) {
      qpack_dequant_group(w.type, w.packed + (r / kPackRows) * qpack_group_bytes(w.type, w.cols), w.cols,
                          out + (r - r0) * ld, ld);
      r += kPackRows;
    } else {
      dequantize_row(w.type, w.row(r), out + (r - r0) * ld, w.cols);
      ++r;
    }
  }
}

// The calling thread's dequantized weight tile, at least n floats: one buffer per thread for
// every gemm-path product (matmul_gemm's tiles and matmul_swiglu's up tiles alike; a SmolLM2
// feed-forward tile is 0.86 MiB), kept for the thread's next call.
float* thread_tile(int64_t n) {
  thread_local std::vector<float> tile;
  if (int64_t(tile.size()) < n) tile = std::vector<float>(static_cast<size_t>(n));  // resize() would double it
  return tile.data();
}

void matmul_gemm(const QMatrix& w, const float* x, int64_t n, float* y) {
  const int64_t tr = tile_rows(w.rows, w.cols), ld = tile_ld(w.cols);
  const int64_t n_tiles = (w.rows + tr - 1) / tr;
  with_single_threaded_blas([&] {
    parallel_for(n_tiles, [&](int64_t t0, int64_t t1) {
      float* tile = thread_tile(tr * ld);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * tr, m = std::min(tr, w.rows - r0);
        dequantize_rows(w, r0, m, tile, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(m), int(w.cols), 1.0f, x,
                    int(w.cols), tile, int(ld), 0.0f, y + r0, int(w.rows));
      }
    });
  });
}

}  // namespace

namespace detail {
void blas_threads_single(bool single) {
  openblas_set_num_threads(single ? 1 : num_threads());
}
}  // namespace detail

int64_t matmul_gemm_min_rows() { return 4; }

void matmul(const QMatrix& w, const float* x, int64_t n, float* y, MatmulPath path) {
  if (n <= 0) return;
  if (path == MatmulPath::kAuto) path = n < matmul_gemm_min_rows() ? MatmulPath::kDot : MatmulPath::kGemm;
  if (path == MatmulPath::kDot) {
    matmul_dot(w, x, n, y);
  } else {
    matmul_gemm(w, x, n, y);
  }
}

void matmul_many(const QMatrix* const* ws, float* const* ys, int k, const float* x, int64_t n,
                 MatmulPath path) {
  if (n <= 0 || k <= 0) return;
  for (int i = 1; i < k; ++i) {
    if (ws[i]->cols != ws[0]->cols) fail("matmul_many: matrix {} has {} columns, matrix 0 has {}", i, ws[i]->cols, ws[0]->cols);
  }
  if (path == MatmulPath::kAuto) path = n < matmul_gemm_min_rows() ? MatmulPath::kDot : MatmulPath::kGemm;
  if (path == MatmulPath::kDot) {
    matmul_dot_many(ws, ys, k, x, n);
  } else {
    for (int i = 0; i < k; ++i) matmul_gemm(*ws[i], x, n, ys[i]);
  }
}

void matmul_swiglu(const QMatrix& gate, const QMatrix& up, const float* x, int64_t n, float* h,
                   float* u_scratch, MatmulPath path) {
  if (n <= 0) return;
  if (gate.rows != up.rows || gate.cols != up.cols) {
    fail("matmul_swiglu: gate is {}x{}, up is {}x{}; expected equal shapes", gate.rows, gate.cols, up.rows, up.cols);
  }
  if (path == MatmulPath::kAuto) path = n < matmul_gemm_min_rows() ? MatmulPath::kDot : MatmulPath::kGemm;
  const int64_t rows = gate.rows;
  if (path == MatmulPath::kGemm) {
    matmul_gemm(gate, x, n, h);
    // x Wu^T a tile of up's rows at a time, each tile's SwiGLU applied to its columns of h at
    // once: the same sgemm calls as matmul_gemm(up, x, n, ...) (same tiles, all n rows; only
    // the output's row stride differs), so the same sums, but the up product is held for one
    // tile per thread (n x tr floats, freed after the call) instead of for all of up's rows
    // (a 512-row prefill step of SmolLM2: 3 MiB). swiglu is element-wise.
    const int64_t tr = tile_rows(up.rows, up.cols), ld = tile_ld(up.cols);
    const int64_t n_tiles = (up.rows + tr - 1) / tr;
    with_single_threaded_blas([&] {
      parallel_for(n_tiles, [&](int64_t t0, int64_t t1) {
        float* tile = thread_tile(tr * ld);
        std::vector<float> ut(static_cast<size_t>(n * tr));
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t * tr, m = std::min(tr, up.rows - r0);
          dequantize_rows(up, r0, m, tile, ld);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(m), int(up.cols), 1.0f, x,
                      int(up.cols), tile, int(ld), 0.0f, ut.data(), int(m));
          for (int64_t i = 0; i < n; ++i) swiglu(h + i * rows + r0, ut.data() + i * m, h + i * rows + r0, m);
        }
      });
    });
    return;
  }
  const QMatrix* ws[2] = {&gate, &up};
  const Q8Act* xq = any_q8(ws, 2) ? quantized_x(x, n, gate.cols) : nullptr;
  parallel_for(rows, [&](int64_t a, int64_t b) {
    dot_rows(gate, x, xq, n, h, a, b);
    dot_rows(up, x, xq, n, u_scratch, a, b);
    for (int64_t t = 0; t < n; ++t) swiglu(h + t * rows + a, u_scratch + t * rows + a, h + t * rows + a, b - a);
  }, kDotGrain);
}

void matmul_ref(const QMatrix& w, const float* x, int64_t n, float* y) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row_ref(w.type, w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += double(row[c]) * double(x[t * w.cols + c]);
      y[t * w.rows + r] = float(acc);
    }
  }
}

}  // namespace aquakv
