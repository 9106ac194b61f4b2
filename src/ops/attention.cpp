// Causal GQA (ops/attention.h). Blocks of up to kBlock queries of one head are computed with two
// sgemm calls (scores = q k^T, out = p v); one to three queries (decode) use two sgemv calls each.
#include "aquakv/ops/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "aquakv/ops/matmul.h"
#include "aquakv/ops/nn.h"
#include "aquakv/ops/qdot.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr int64_t kBlock = 32;

void head_block(const AttentionShape& s, const float* q, int64_t i0, int64_t m, int64_t p0,
                const float* k, const float* v, int64_t kv_stride, float* out, int h,
                std::vector<float>& scores) {
  const int64_t qs = int64_t(s.n_heads) * s.head_dim;
  const int g = h / (s.n_heads / s.n_kv_heads);
  const int64_t hd = s.head_dim;
  const int64_t n_keys = p0 + i0 + m;  // keys seen by the block's last query
  scores.resize(static_cast<size_t>(m * n_keys));
  const float* qh = q + i0 * qs + int64_t(h) * hd;
  const float* kg = k + int64_t(g) * hd;
  const float* vg = v + int64_t(g) * hd;
  float* oh = out + i0 * qs + int64_t(h) * hd;
  if (m >= 4) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n_keys), int(hd), s.scale, qh,
                int(qs), kg, int(kv_stride), 0.0f, scores.data(), int(n_keys));
  } else {
    // Few queries (decode): one matrix-vector product per query over the strided key rows.
    for (int64_t r = 0; r < m; ++r) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n_keys), int(hd), s.scale, kg, int(kv_stride),
                  qh + r * qs, 1, 0.0f, scores.data() + r * n_keys, 1);
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    float* row = scores.data() + r * n_keys;
    const int64_t seen = p0 + i0 + r + 1;
    softmax(row, seen);
    std::fill(row + seen, row + n_keys, 0.0f);
  }
  if (m >= 4) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(hd), int(n_keys), 1.0f,
                scores.data(), int(n_keys), vg, int(kv_stride), 0.0f, oh, int(qs));
  } else {
    // out = V^T p over the keys this query sees.
    for (int64_t r = 0; r < m; ++r) {
      cblas_sgemv(CblasRowMajor, CblasTrans, int(p0 + i0 + r + 1), int(hd), 1.0f, vg,
                  int(kv_stride), scores.data() + r * n_keys, 1, 0.0f, oh + r * qs, 1);
    }
  }
}

}  // namespace

void attention(const AttentionShape& s, const float* q, int64_t n, int64_t p0, const float* k,
               const float* v, int64_t kv_stride, float* out) {
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  const int64_t items = n_blocks * s.n_heads;
  with_single_threaded_blas([&] {
    parallel_for(items, [&](int64_t a, int64_t b) {
      thread_local std::vector<float> scores;
      for (int64_t it = a; it < b; ++it) {
        const int h = int(it % s.n_heads);
        const int64_t i0 = (it / s.n_heads) * kBlock;
        head_block(s, q, i0, std::min(kBlock, n - i0), p0, k, v, kv_stride, out, h, scores);
      }
    });
  });
}

void attention_ref(const AttentionShape& s, const float* q, int64_t n, int64_t p0,
                   const float* k, const float* v, int64_t kv_stride, float* out) {
  const int64_t qs = int64_t(s.n_heads) * s.head_dim;
  const int group = s.n_heads / s.n_kv_heads;
  std::vector<double> sc;
  for (int64_t i = 0; i < n; ++i) {
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / group;
      const int64_t seen = p0 + i + 1;
      sc.assign(static_cast<size_t>(seen), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < seen; ++t) {
        double d = 0;
        for (int j = 0; j < s.head_dim; ++j) {
          d += double(q[i * qs + h * s.head_dim + j]) * double(k[t * kv_stride + g * s.head_dim + j]);
        }
        sc[size_t(t)] = d * s.scale;
        mx = std::max(mx, sc[size_t(t)]);
      }
      double sum = 0;
      for (auto& x : sc) sum += (x = std::exp(x - mx));
      for (int j = 0; j < s.head_dim; ++j) {
        double o = 0;
        for (int64_t t = 0; t < seen; ++t) o += sc[size_t(t)] * double(v[t * kv_stride + g * s.head_dim + j]);
        out[i * qs + h * s.head_dim + j] = float(o / sum);
      }
    }
  }
}

}  // namespace aquakv
