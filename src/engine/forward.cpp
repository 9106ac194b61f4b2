// The transformer layer loop (engine/forward.h). Shapes: n = tokens in this step, p0 = position
// of the first, T = p0 + n, d = d_model, C = kv width, Q = n_heads*head_dim.
#include "aquakv/engine/forward.h"

#include <algorithm>
#include <cmath>

#include "aquakv/ops/nn.h"
#include "aquakv/ops/qpack.h"
#include "aquakv/ops/qdot.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {

struct Forward::Scratch {
  explicit Scratch(const ModelConfig& c) : rope(c.rope), rope_swa(c.rope_swa) {}
  // The queries' RoPE tables, grown only when the cache does not expose a table with the same
  // parameters (KvCache::key_rope), whose values are then the same bit for bit.
  RopeTable rope;      // global layers
  RopeTable rope_swa;  // sliding-window layers (unused when the model has none)
  void ensure_rope(const ModelConfig& c, int64_t n_pos) {
    rope.ensure(n_pos);
    if (!c.window.empty()) rope_swa.ensure(n_pos);
  }
  const RopeTable& rope_of(const ModelConfig& c, int l) const { return c.is_swa(l) ? rope_swa : rope; }
  std::vector<float> x;   // (n, d) residual stream
  std::vector<float> xn;  // (n, d) normalized rows; also the (n, d) output of each block's
                          // last projection (o and the FFN's down projection), which is added
                          // to x before xn is written again
  // The other activations of a step, in one block whose halves are reused by phase: attention
  // q (n, Q) | k, v (n, C) (keys before RoPE, values) | att (n, Q); then the feed-forward
  // g (n, n_ff), and u (n, n_ff) where the step needs it whole (GeGLU, and SwiGLU's dot path:
  // SwiGLU's gemm path makes x Wu^T a weight tile at a time, ops/matmul.h), which start once
  // att is consumed. A step's activations are thus n x (2d + max(2Q + 2C, n_ff or 2 n_ff))
  // floats, not the sum of all of them (SmolLM2, 512 rows: 5.3 MiB instead of 8.3).
  std::vector<float> work;
  float *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr, *g = nullptr, *u = nullptr;
  // Sizes every buffer for steps of n rows whose products take path mp (before a step: later
  // calls must not move them).
  void plan(const ModelConfig& c, int64_t n, MatmulPath mp) {
    const int64_t Q = c.q_width(), C = c.kv_width(), F = c.n_ff;
    if (mp == MatmulPath::kAuto) mp = n < matmul_gemm_min_rows() ? MatmulPath::kDot : MatmulPath::kGemm;
    const bool whole_u = c.gelu_ffn || mp == MatmulPath::kDot;
    const int64_t need = n * std::max(2 * Q + 2 * C, (whole_u ? 2 : 1) * F);
    if (int64_t(work.size()) < need) work.resize(size_t(need));
    if (int64_t(xn.size()) < n * c.d_model) xn.resize(size_t(n * c.d_model));
    q = work.data();
    k = q + n * Q;
    v = k + n * C;
    att = v + n * C;
    g = work.data();
    u = whole_u ? g + n * F : nullptr;  // null: matmul_swiglu's gemm path does not read it
  }
};

namespace {

template <typename T>
T* sized(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

void add_rows(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_bias(float* y, const std::vector<float>& b, int64_t n) {
  if (b.empty()) return;
  const int64_t w = int64_t(b.size());
  for (int64_t t = 0; t < n; ++t) add_rows(y + t * w, b.data(), w);
}

// In place: each of n rows of width d RMS-normalized with weights w (nothing when w is empty).
void post_norm(float* y, const std::vector<float>& w, int64_t n, int64_t d, float eps) {
  if (w.empty()) return;
  parallel_for(n, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) rms_norm(y + t * d, w.data(), y + t * d, d, eps);
  });
}

}  // namespace

Forward::Forward(const Model& model, int threads, ForwardOptions options)
    : model_(model), opt_(options), s_(std::make_unique<Scratch>(model.config())) {
  if (threads > 0 && threads != num_threads()) set_num_threads(threads);
  if (opt_.max_step <= 0) opt_.max_step = 512;
}

Forward::~Forward() = default;

void Forward::check_shape(const KvCache& cache) const {
  const ModelConfig& c = model_.config();
  const KvShape& ks = cache.shape();
  if (ks.n_layers != c.n_layers || ks.n_kv_heads != c.n_kv_heads || ks.head_dim != c.head_dim) {
    fail("kv cache shape (layers {}, kv heads {}, head dim {}) does not match the model ({}, {}, {})",
         ks.n_layers, ks.n_kv_heads, ks.head_dim, c.n_layers, c.n_kv_heads, c.head_dim);
  }
}

void Forward::check_token(int32_t token, int64_t index) const {
  const int n_vocab = model_.config().n_vocab;
  if (token < 0 || token >= n_vocab) fail("token id {} at index {} is outside the vocabulary [0, {})", token, index, n_vocab);
}

void Forward::check_room(const KvCache& cache, int seq, int64_t n) const {
  const int64_t max_tokens = cache.shape().max_tokens;
  if (cache.n_tokens(seq) + n > max_tokens) {
    fail("context full: sequence {} holds {} tokens, {} more exceed the context of {}", seq,
         cache.n_tokens(seq), n, max_tokens);
  }
}

void Forward::eval(KvCache& cache, int seq, std::span<const int32_t> tokens, float* logits_out,
                   bool all_logits) {
  const ModelConfig& c = model_.config();
  check_shape(cache);
  const int64_t n = int64_t(tokens.size());
  for (int64_t i = 0; i < n; ++i) check_token(tokens[size_t(i)], i);
  check_room(cache, seq, n);
  for (int64_t i0 = 0; i0 < n; i0 += opt_.max_step) {
    const int64_t m = std::min(opt_.max_step, n - i0);
    const bool last = i0 + m == n;
    float* lo = nullptr;
    if (logits_out != nullptr && all_logits) lo = logits_out + i0 * c.n_vocab;
    if (logits_out != nullptr && !all_logits && last) lo = logits_out;
    step(cache, seq, tokens.subspan(size_t(i0), size_t(m)), lo, all_logits);
  }
}

void Forward::step(KvCache& cache, int seq, std::span<const int32_t> tokens, float* logits_out,
                   bool all_logits) {
  const int64_t n = int64_t(tokens.size());
  if (n == 0) return;
  const int64_t p0 = cache.n_tokens(seq);
  s_->plan(model_.config(), n, opt_.matmul);
  embed(tokens);
  cache.begin_step(seq, n);
  for (int l = 0; l < model_.config().n_layers; ++l) layer(cache, l, n, p0);
  cache.end_step();
  if (logits_out == nullptr) return;
  logits(all_logits ? 0 : n - 1, n, logits_out, opt_.matmul);
}

void Forward::eval_batch(std::span<KvCache* const> caches, std::span<const int> seqs,
                         std::span<const int32_t> tokens, float* logits_out) {
  const size_t B = caches.size();
  if (seqs.size() != B || tokens.size() != B)
    fail("eval_batch: {} caches, {} sequence ids and {} tokens; expected one of each per sequence", B, seqs.size(), tokens.size());
  for (size_t b = 0; b < B; ++b) {
    if (caches[b] == nullptr) fail("eval_batch: cache {} is null", b);
    if (std::find(caches.begin(), caches.begin() + b, caches[b]) != caches.begin() + b)
      fail("eval_batch: cache {} is also given for an earlier sequence (one step per cache at a time)", b);
    check_shape(*caches[b]);
    check_token(tokens[b], int64_t(b));
    check_room(*caches[b], seqs[b], 1);
  }
  if (B == 0) return;
  std::vector<int64_t> p0(B);
  for (size_t b = 0; b < B; ++b) p0[b] = caches[b]->n_tokens(seqs[b]);
  s_->plan(model_.config(), int64_t(B), one_token_path());
  embed(tokens);
  for (size_t b = 0; b < B; ++b) caches[b]->begin_step(seqs[b], 1);
  for (int l = 0; l < model_.config().n_layers; ++l) layer_batch(caches, l, p0);
  for (size_t b = 0; b < B; ++b) caches[b]->end_step();
  if (logits_out != nullptr) logits(0, int64_t(B), logits_out, one_token_path());
}

MatmulPath Forward::one_token_path() const {
  if (opt_.matmul != MatmulPath::kAuto) return opt_.matmul;
  return 1 < matmul_gemm_min_rows() ? MatmulPath::kDot : MatmulPath::kGemm;
}

// Rows of x: the embeddings of `tokens`, times embd_scale (gemma3: sqrt(d_model)). When the
// output projection is the embedding matrix (tied) and was repacked (ops/qpack.h), rows come
// from its packed groups: the model released the file's pages of those rows, and reading them
// there would bring the embedding back in beside its packed copy (up to 17 MiB of SmolLM2's
// over a long prompt). qpack_dequant_group gives the same floats as the file's rows.
void Forward::embed(std::span<const int32_t> tokens) {
  const int64_t n = int64_t(tokens.size()), d = model_.config().d_model;
  const float scale = model_.config().embd_scale;
  float* x = sized(s_->x, n * d);
  const QMatrix& emb = model_.tok_embd();
  const QMatrix& out = model_.output();
  const bool packed = out.packed != nullptr && out.data == emb.data && out.type == emb.type && out.cols == d;
  parallel_for(n, [&](int64_t a, int64_t b) {
    std::vector<float> group;
    for (int64_t t = a; t < b; ++t) {
      float* xt = x + t * d;
      const int64_t id = tokens[size_t(t)];
      if (packed && id < out.packed_rows()) {
        group.resize(size_t(kPackRows * d));
        const int64_t g = id / kPackRows;
        qpack_dequant_group(out.type, out.packed + g * qpack_group_bytes(out.type, d), d, group.data(), d);
        std::copy_n(group.data() + (id % kPackRows) * d, d, xt);
      } else {
        dequantize_row(emb.type, emb.row(id), xt, d);
      }
      if (scale != 1.0f) for (int64_t i = 0; i < d; ++i) xt[i] *= scale;
    }
  });
}

// Final norm and output projection of rows [first, n) of x.
void Forward::logits(int64_t first, int64_t n, float* logits_out, MatmulPath mp) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model, rows = n - first;
  const float* x = s_->x.data();
  float* xn = sized(s_->xn, n * d);
  for (int64_t t = first; t < n; ++t) rms_norm(x + t * d, model_.output_norm().data(), xn + (t - first) * d, d, c.norm_eps);
  matmul(model_.output(), xn, rows, logits_out, mp);
  if (c.final_logit_softcap > 0.0f) softcap(logits_out, rows * c.n_vocab, c.final_logit_softcap);
}

void Forward::layer(KvCache& cache, int l, int64_t n, int64_t p0) {
  const LayerWeights& w = model_.layer(l);
  Scratch& s = *s_;
  qkv(w, n, opt_.matmul);
  attend(cache, l, n, p0, s.k, s.v, s.q, s.att);
  out_and_ffn(w, n, opt_.matmul);
}

// Row b of the batch is sequence b's single token; only attention is per sequence.
void Forward::layer_batch(std::span<KvCache* const> caches, int l, std::span<const int64_t> p0) {
  const ModelConfig& c = model_.config();
  const LayerWeights& w = model_.layer(l);
  const int64_t B = int64_t(caches.size()), C = c.kv_width(), Q = c.q_width();
  const MatmulPath mp = one_token_path();
  Scratch& s = *s_;
  qkv(w, B, mp);
  for (int64_t b = 0; b < B; ++b) {
    attend(*caches[size_t(b)], l, 1, p0[size_t(b)], s.k + b * C, s.v + b * C, s.q + b * Q,
           s.att + b * Q);
  }
  out_and_ffn(w, B, mp);
}

// xn = RMSNorm(x); q, k, v = projections of xn (plus biases) for n rows.
void Forward::qkv(const LayerWeights& w, int64_t n, MatmulPath mp) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model;
  Scratch& s = *s_;
  float* x = s.x.data();
  float* xn = s.xn.data();
  float *q = s.q, *k = s.k, *v = s.v;
  parallel_for(n, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) rms_norm(x + t * d, w.attn_norm.data(), xn + t * d, d, c.norm_eps);
  });
  // One parallel region for the three projections (decode: one barrier instead of three).
  const QMatrix* ws[3] = {&w.wq, &w.wk, &w.wv};
  float* ys[3] = {q, k, v};
  matmul_many(ws, ys, 3, xn, n, mp);
  add_bias(q, w.bq, n);
  add_bias(k, w.bk, n);
  add_bias(v, w.bv, n);
  if (c.qk_norm) {  // QK-norm: every head of q and k RMS-normalized with its own weights
    const int64_t hd = c.head_dim, hq = n * c.n_heads, hk = n * c.n_kv_heads;
    parallel_for(hq + hk, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) {
        if (i < hq) rms_norm(q + i * hd, w.q_norm.data(), q + i * hd, hd, c.norm_eps);
        else rms_norm(k + (i - hq) * hd, w.k_norm.data(), k + (i - hq) * hd, hd, c.norm_eps);
      }
    });
  }
}

// One sequence's attention for its n new rows: hands k, v (keys before RoPE) to the cache,
// rotates q (in place) at positions p0 .. p0+n-1, and lets the cache format compute att (n, Q)
// on its own storage (kv/kv_cache.h).
void Forward::attend(KvCache& cache, int l, int64_t n, int64_t p0, const float* k,
                     const float* v, float* q, float* att) {
  const ModelConfig& c = model_.config();
  const int64_t Q = c.q_width();
  Scratch& s = *s_;
  cache.append(l, k, v);
  // The layer's RoPE (gemma3: local or global): the cache's table for its keys when it has the
  // same parameters and positions, else this pass's own.
  const RopeTable* rope = cache.key_rope(l);
  if (rope == nullptr || !same_rope(rope->params(), c.layer_rope(l)) || rope->n_pos() < p0 + n) {
    s.ensure_rope(c, p0 + n);
    rope = &s.rope_of(c, l);
  }
  parallel_for(n, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) rope_row(*rope, q + t * Q, c.n_heads, c.head_dim, p0 + t);
  });
  KvAttention a;
  a.n = n;
  a.q = q;
  a.out = att;
  a.n_heads = c.n_heads;
  a.scale = c.attn_scale;
  a.observer = opt_.observer;
  cache.attend(l, a);
  cache.finish_layer(l);  // nothing in this step reads the layer again (kv/kv_cache.h)
}

// x += att * Wo^T; then the feed-forward block (SwiGLU, or GeGLU) on n rows. With post_norms
// (Gemma) each block's output is RMS-normalized before it is added to x.
void Forward::out_and_ffn(const LayerWeights& w, int64_t n, MatmulPath mp) {
  const ModelConfig& c = model_.config();
  const int64_t d = c.d_model;
  Scratch& s = *s_;
  float* x = s.x.data();
  float* xn = s.xn.data();
  float* o = xn;  // projection outputs: added to x before xn is written again
  matmul(w.wo, s.att, n, o, mp);
  post_norm(o, w.post_attn_norm, n, d, c.norm_eps);
  add_rows(x, o, n * d);
  parallel_for(n, [&](int64_t a, int64_t b) {
    for (int64_t t = a; t < b; ++t) rms_norm(x + t * d, w.ffn_norm.data(), xn + t * d, d, c.norm_eps);
  });
  float *g = s.g, *u = s.u;  // att, the only other live part of the block, is consumed
  if (c.gelu_ffn) {  // GeGLU: g = gelu(xn Wg^T) * (xn Wu^T)
    matmul(w.w_gate, xn, n, g, mp);
    matmul(w.w_up, xn, n, u, mp);
    parallel_for(n * c.n_ff, [&](int64_t a, int64_t b) { geglu(g + a, u + a, g + a, b - a); }, 4096);
  } else {
    matmul_swiglu(w.w_gate, w.w_up, xn, n, g, u, mp);  // g = silu(xn Wg^T) * (xn Wu^T)
  }
  matmul(w.w_down, g, n, o, mp);
  post_norm(o, w.post_ffn_norm, n, d, c.norm_eps);
  add_rows(x, o, n * d);
}

}  // namespace aquakv
