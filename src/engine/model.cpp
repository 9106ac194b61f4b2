// Model loading (engine/model.h): metadata -> ModelConfig, tensors -> validated views.
#include "aquakv/engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numbers>

#include "aquakv/engine/fingerprint.h"
#include "aquakv/ops/qpack.h"
#include "aquakv/util/parallel.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// Types the matmul kernels handle (ops/qdot.h).
bool matmul_type_ok(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q4_0:
    case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

struct Loader {
  const GgufFile& f;
  const std::string& arch;

  std::string key(const char* k) const { return arch + "." + k; }

  int get_int(const char* k, int64_t lo, int64_t hi) const {
    const uint64_t v = f.get_u64(key(k));
    if (v < uint64_t(lo) || v > uint64_t(hi)) {
      fail("{}: metadata {} = {} is outside [{}, {}]", f.path(), key(k), v, lo, hi);
    }
    return int(v);
  }

  int get_int_or(const char* k, int64_t dflt, int64_t lo, int64_t hi) const {
    if (f.find(key(k)) == nullptr) return int(dflt);
    return get_int(k, lo, hi);
  }

  const GgufTensorInfo& tensor(const std::string& name) const {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (t == nullptr) fail("{}: tensor {} is missing (architecture {})", f.path(), name, arch);
    return *t;
  }

  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }

  QMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const {
    const GgufTensorInfo& t = tensor(name);
    const auto info = ggml_type_info(uint32_t(t.type));
    if (!info || !info->supported || !matmul_type_ok(t.type)) {
      fail("{}: tensor {} has type {} ({}); aquakv runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
           "Q8_0, Q4_K, Q5_K, Q6_K", f.path(), name, info ? std::string(info->name) : "unknown",
           uint32_t(t.type));
    }
    if (t.shape.size() != 2 || t.shape[0] != cols || t.shape[1] != rows) {
      fail("{}: tensor {} has shape {}, expected [{}, {}]", f.path(), name, shape_str(t.shape),
           cols, rows);
    }
    if (cols % info->block_values != 0) {
      fail("{}: tensor {} row of {} values is not a multiple of the {} block ({})", f.path(), name,
           cols, info->name, info->block_values);
    }
    QMatrix m;
    m.type = t.type;
    m.rows = rows;
    m.cols = cols;
    m.row_bytes = ggml_row_bytes(t.type, cols);
    m.data = t.data;
    if (m.row_bytes * rows != t.n_bytes) {
      fail("{}: tensor {} holds {} bytes, expected {}", f.path(), name, t.n_bytes, m.row_bytes * rows);
    }
    return m;
  }

  std::vector<float> vec(const std::string& name, int64_t n) const {
    const GgufTensorInfo& t = tensor(name);
    const auto info = ggml_type_info(uint32_t(t.type));
    if (!info || !info->supported) fail("{}: tensor {} has an unsupported type {}", f.path(), name, uint32_t(t.type));
    if (t.n_values != n || n % info->block_values != 0) {
      fail("{}: tensor {} has shape {}, expected [{}]", f.path(), name, shape_str(t.shape), n);
    }
    std::vector<float> v(static_cast<size_t>(n));
    dequantize_row(t.type, t.data, v.data(), n);
    return v;
  }

  std::vector<float> opt_vec(const std::string& name, int64_t n) const {
    return f.find_tensor(name) != nullptr ? vec(name, n) : std::vector<float>{};
  }
};

// Llama-3 frequency factors from metadata parameters, when the file has no rope_freqs tensor:
// wavelengths shorter than original_ctx/high_freq_factor keep their frequency, longer than
// original_ctx/low_freq_factor are divided by `factor`, and the band between interpolates.
std::vector<float> llama3_factors(const RopeParams& r, double factor, double low, double high,
                                  double orig_ctx) {
  std::vector<float> out(static_cast<size_t>(r.n_rot / 2));
  const double low_wl = orig_ctx / low, high_wl = orig_ctx / high;
  for (int i = 0; i < r.n_rot / 2; ++i) {
    const double freq = std::pow(r.freq_base, -2.0 * i / r.n_rot);
    const double wl = 2 * std::numbers::pi / freq;
    double div = 1.0;
    if (wl > low_wl) {
      div = factor;
    } else if (wl >= high_wl) {
      const double smooth = (orig_ctx / wl - low) / (high - low);
      div = 1.0 / ((1 - smooth) / factor + smooth);
    }
    out[size_t(i)] = float(div);
  }
  return out;
}

// gemma3 (llama.cpp's reading of the same GGUF): embeddings scaled by sqrt(d_model); every
// 6th layer (l % 6 == 5) global with the file's RoPE, the others attend to the last
// `attention.sliding_window` positions with RoPE base 10000 and no scaling; the norms' stored
// weights are used as they are (the converter has already added Gemma's +1); an optional
// final logit soft-cap. Attention logit soft-capping (Gemma 2) is refused.
void gemma3_config(const GgufFile& f, const Loader& L, ModelConfig& c) {
  c.embd_scale = std::sqrt(float(c.d_model));
  c.qk_norm = c.post_norms = c.gelu_ffn = true;
  if (c.n_layers == 62) c.attn_scale = float(1.0 / std::sqrt(double(c.d_model / c.n_heads)));
  const double attn_cap = f.get_f64_or(L.key("attn_logit_softcapping"), 0.0);
  if (attn_cap != 0.0) {
    fail("{}: {} = {}: attention logit soft-capping is not supported", f.path(),
         L.key("attn_logit_softcapping"), attn_cap);
  }
  const double cap = f.get_f64_or(L.key("final_logit_softcapping"), 0.0);
  if (!(cap >= 0.0 && std::isfinite(cap))) {
    fail("{}: {} = {} must be >= 0", f.path(), L.key("final_logit_softcapping"), cap);
  }
  c.final_logit_softcap = float(cap);
  const int64_t swa = int64_t(f.get_u64_or(L.key("attention.sliding_window"), 0));
  if (swa < 0 || swa > (int64_t(1) << 24)) {
    fail("{}: {} = {} is outside [0, 2^24]", f.path(), L.key("attention.sliding_window"), swa);
  }
  if (swa > 0) {
    c.window.assign(size_t(c.n_layers), swa);
    for (int l = 5; l < c.n_layers; l += 6) c.window[size_t(l)] = 0;
  }
  c.rope_swa = RopeParams{RopeType::kNeox, c.rope.n_rot, 10000.0, 1.0, {}};
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path) { return from_gguf(GgufFile::open(path)); }

std::unique_ptr<Model> Model::from_gguf(std::unique_ptr<GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  const GgufFile& f = *m->file_;
  ModelConfig& c = m->cfg_;
  c.arch = f.get_string("general.architecture");
  c.name = f.get_string_opt("general.name").value_or("");
  RopeType rope_type;
  if (c.arch == "llama" || c.arch == "mistral") {
    rope_type = RopeType::kNormal;
  } else if (c.arch == "qwen2" || c.arch == "gemma3") {
    rope_type = RopeType::kNeox;
  } else {
    fail("{}: general.architecture is '{}'; aquakv supports llama, mistral, qwen2, gemma3", f.path(), c.arch);
  }
  const Loader L{f, c.arch};
  if (f.get_u64_or(L.key("expert_count"), 0) > 0 || f.find_tensor("blk.0.ffn_gate_inp.weight")) {
    fail("{}: mixture-of-experts models ({}.expert_count) are not supported", f.path(), c.arch);
  }
  c.n_layers = L.get_int("block_count", 1, 4096);
  c.d_model = L.get_int("embedding_length", 1, 1 << 20);
  c.n_ff = L.get_int("feed_forward_length", 1, 1 << 22);
  c.n_heads = L.get_int("attention.head_count", 1, 4096);
  c.n_kv_heads = L.get_int_or("attention.head_count_kv", c.n_heads, 1, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0) {
    fail("{}: {} = {} is not a multiple of {} = {}", f.path(), L.key("attention.head_count"),
         c.n_heads, L.key("attention.head_count_kv"), c.n_kv_heads);
  }
  const int dflt_hd = c.d_model % c.n_heads == 0 ? c.d_model / c.n_heads : 0;
  c.head_dim = L.get_int_or("attention.key_length", dflt_hd, 2, 4096);
  const int v_len = L.get_int_or("attention.value_length", c.head_dim, 1, 4096);
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || v_len != c.head_dim) {
    fail("{}: head size (key_length {}, value_length {}) must be equal and even", f.path(),
         c.head_dim, v_len);
  }
  c.n_ctx_train = int64_t(f.get_u64_or(L.key("context_length"), 2048));
  if (c.n_ctx_train <= 0 || c.n_ctx_train > (int64_t(1) << 24)) {
    fail("{}: {} = {} is outside [1, 2^24]", f.path(), L.key("context_length"), c.n_ctx_train);
  }
  c.norm_eps = float(f.get_f64_or(L.key("attention.layer_norm_rms_epsilon"), 1e-5));
  if (!(c.norm_eps > 0.0f && c.norm_eps < 1.0f)) {
    fail("{}: {} = {} is outside (0, 1)", f.path(), L.key("attention.layer_norm_rms_epsilon"), c.norm_eps);
  }

  // RoPE.
  RopeParams& r = c.rope;
  r.type = rope_type;
  r.n_rot = L.get_int_or("rope.dimension_count", c.head_dim, 2, c.head_dim);
  if (r.n_rot % 2 != 0) fail("{}: {} = {} must be even", f.path(), L.key("rope.dimension_count"), r.n_rot);
  r.freq_base = f.get_f64_or(L.key("rope.freq_base"), 10000.0);
  if (!(r.freq_base > 1.0)) fail("{}: {} = {} must be > 1", f.path(), L.key("rope.freq_base"), r.freq_base);
  const std::string scaling = f.get_string_opt(L.key("rope.scaling.type")).value_or("none");
  double factor = f.get_f64_or(L.key("rope.scaling.factor"), 0.0);
  if (factor == 0.0) factor = f.get_f64_or(L.key("rope.scale_linear"), 0.0);
  if (scaling == "linear" || (scaling == "none" && factor > 0.0 && f.find(L.key("rope.scale_linear")))) {
    if (!(factor > 0.0)) fail("{}: {} must be > 0 for linear scaling", f.path(), L.key("rope.scaling.factor"));
    r.freq_scale = 1.0 / factor;
  } else if (scaling == "llama3") {
    // handled through the frequency factors below
  } else if (scaling != "none") {
    fail("{}: {} = '{}' is not supported (none, linear, llama3)", f.path(), L.key("rope.scaling.type"), scaling);
  }
  if (f.find_tensor("rope_freqs.weight") != nullptr) {
    r.freq_factors = L.vec("rope_freqs.weight", r.n_rot / 2);
  } else if (scaling == "llama3") {
    const double low = f.get_f64_or(L.key("rope.scaling.low_freq_factor"), 1.0);
    const double high = f.get_f64_or(L.key("rope.scaling.high_freq_factor"), 4.0);
    const double orig = f.get_f64_or(L.key("rope.scaling.original_context_length"), 8192.0);
    if (!(factor >= 1.0 && high > low && low > 0.0 && orig > 0.0)) {
      fail("{}: llama3 rope scaling parameters (factor {}, low {}, high {}, original context {}) are invalid",
           f.path(), factor, low, high, orig);
    }
    r.freq_factors = llama3_factors(r, factor, low, high, orig);
  }
  for (float ff : r.freq_factors) {
    if (!(ff > 0.0f) || !std::isfinite(ff)) fail("{}: rope_freqs.weight holds a non-positive factor {}", f.path(), ff);
  }
  c.attn_scale = float(1.0 / std::sqrt(double(c.head_dim)));
  if (c.arch == "gemma3") gemma3_config(f, L, c);

  // Tensors.
  const int64_t d = c.d_model, qw = c.q_width(), kvw = c.kv_width();
  {
    const GgufTensorInfo& te = L.tensor("token_embd.weight");
    if (te.shape.size() != 2 || te.shape[0] != d || te.shape[1] <= 0) {
      fail("{}: tensor token_embd.weight has shape {}, expected [{}, n_vocab]", f.path(),
           Loader::shape_str(te.shape), d);
    }
    c.n_vocab = te.shape[1];
  }
  m->tok_embd_ = L.matrix("token_embd.weight", c.n_vocab, d);
  m->output_norm_ = L.vec("output_norm.weight", d);
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  m->output_ = c.tied_output ? m->tok_embd_ : L.matrix("output.weight", c.n_vocab, d);
  m->weight_bytes_ = m->tok_embd_.rows * m->tok_embd_.row_bytes;
  if (!c.tied_output) m->weight_bytes_ += m->output_.rows * m->output_.row_bytes;
  c.has_qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  m->layers_.resize(size_t(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& w = m->layers_[size_t(i)];
    w.attn_norm = L.vec(p + "attn_norm.weight", d);
    if (c.qk_norm) {
      w.q_norm = L.vec(p + "attn_q_norm.weight", c.head_dim);
      w.k_norm = L.vec(p + "attn_k_norm.weight", c.head_dim);
    }
    if (c.post_norms) {
      w.post_attn_norm = L.vec(p + "post_attention_norm.weight", d);
      w.post_ffn_norm = L.vec(p + "post_ffw_norm.weight", d);
    }
    w.wq = L.matrix(p + "attn_q.weight", qw, d);
    w.wk = L.matrix(p + "attn_k.weight", kvw, d);
    w.wv = L.matrix(p + "attn_v.weight", kvw, d);
    w.wo = L.matrix(p + "attn_output.weight", d, qw);
    w.bq = L.opt_vec(p + "attn_q.bias", qw);
    w.bk = L.opt_vec(p + "attn_k.bias", kvw);
    w.bv = L.opt_vec(p + "attn_v.bias", kvw);
    if (f.find_tensor(p + "attn_output.bias") != nullptr) {
      fail("{}: tensor {}attn_output.bias is not supported", f.path(), p);
    }
    w.ffn_norm = L.vec(p + "ffn_norm.weight", d);
    w.w_gate = L.matrix(p + "ffn_gate.weight", c.n_ff, d);
    w.w_up = L.matrix(p + "ffn_up.weight", c.n_ff, d);
    w.w_down = L.matrix(p + "ffn_down.weight", d, c.n_ff);
    for (const QMatrix* q : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
      m->weight_bytes_ += q->rows * q->row_bytes;
    }
  }
  // ~8 KiB per tensor: a few milliseconds, once per load.
  m->meta_hash_ = model_meta_hash(f, c.arch);
  m->pack_weights();
  return m;
}

void Model::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

// Copies every matrix with a packed layout into 16-row groups (one 64-byte aligned buffer),
// points its QMatrix at them and releases the file's pages of those rows. The token embedding
// keeps reading the file (a few rows per step); when tied, the output projection is packed.
void Model::pack_weights() {
  const char* env = std::getenv("AQUAKV_REPACK");
  if (env != nullptr && std::string(env) == "0") return;
  std::vector<QMatrix*> ms;
  for (LayerWeights& w : layers_) {
    for (QMatrix* q : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) ms.push_back(q);
  }
  ms.push_back(&output_);
  std::vector<int64_t> offs;
  int64_t total = 0;
  for (QMatrix* q : ms) {
    offs.push_back(total);
    if (qpack_supported(q->type) && q->rows >= kPackRows) {
      total += (q->rows / kPackRows) * qpack_group_bytes(q->type, q->cols);
      total = (total + 63) / 64 * 64;
    }
  }
  if (total == 0) return;
  packed_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, size_t(total))));
  if (!packed_) fail("{}: cannot allocate {} bytes for the repacked weights", path(), total);
  packed_bytes_ = total;
  for (size_t i = 0; i < ms.size(); ++i) {
    QMatrix& q = *ms[i];
    if (!qpack_supported(q.type) || q.rows < kPackRows) continue;
    uint8_t* dst = packed_.get() + offs[i];
    const int64_t gb = qpack_group_bytes(q.type, q.cols), n_groups = q.rows / kPackRows;
    // Pages of the file are released a few MiB at a time as their rows are packed, so the
    // process never holds a whole matrix twice (Gemma 3's tied output matrix is 170 MiB).
    constexpr int64_t kChunk = 256;
    parallel_for((n_groups + kChunk - 1) / kChunk, [&](int64_t a, int64_t b) {
      for (int64_t c = a; c < b; ++c) {
        const int64_t g0 = c * kChunk, g1 = std::min(n_groups, g0 + kChunk);
        for (int64_t g = g0; g < g1; ++g) {
          qpack_group(q.type, q.row(g * kPackRows), q.row_bytes, q.cols, dst + g * gb);
        }
        file_->release_pages(q.row(g0 * kPackRows), uint64_t((g1 - g0) * kPackRows * q.row_bytes));
      }
    });
    q.packed = dst;
    file_->release_pages(q.data, uint64_t(n_groups * kPackRows * q.row_bytes));
  }
}

KvShape Model::kv_shape(int64_t max_tokens) const {
  KvShape s;
  s.n_layers = cfg_.n_layers;
  s.n_kv_heads = cfg_.n_kv_heads;
  s.head_dim = cfg_.head_dim;
  s.max_tokens = max_tokens;
  s.arch = cfg_.arch;
  s.model_hash = meta_hash_;
  s.rope = cfg_.rope;
  if (!cfg_.window.empty()) {  // gemma3: local layers have their own RoPE base and window
    s.window = cfg_.window;
    s.layer_rope.reserve(size_t(cfg_.n_layers));
    for (int l = 0; l < cfg_.n_layers; ++l) s.layer_rope.push_back(cfg_.layer_rope(l));
  }
  return s;
}

}  // namespace aquakv
