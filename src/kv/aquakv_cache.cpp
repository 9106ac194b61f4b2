// The compressed cache of kv/aquakv_cache.h: storage, the chunk encoder (end_step) and the
// layer-by-layer decoder (read).
#include "aquakv/kv/aquakv_cache.h"

#include "aquakv/kv/attend.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/ops/half_rows.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/page_vector.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

// Appends n values as halves.
void append_halves(const float* f, int64_t n, PageVector<uint16_t>& out) {
  const size_t o = out.size();
  out.resize(o + size_t(n));
  floats_to_halves(f, n, out.data() + o);
}

// Codec calls spread over threads in whole blocks (codecs are thread-safe, see quant/codec.h).
void encode_rows(const Codec& c, const float* x, int64_t rows, uint8_t* out) {
  const int64_t br = c.block_rows(), blocks = rows / br, C = c.dim();
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    c.encode(x + b0 * br * C, (b1 - b0) * br, out + c.encoded_bytes(b0 * br));
  }, std::max<int64_t>(1, 16 / br));
}
void decode_rows(const Codec& c, const uint8_t* in, int64_t rows, float* x) {
  const int64_t br = c.block_rows(), blocks = rows / br, C = c.dim();
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    c.decode(in + c.encoded_bytes(b0 * br), (b1 - b0) * br, x + b0 * br * C);
  }, std::max<int64_t>(1, 32 / br));
}

// Rows the encoder takes through all layers at a time (rounded to the codecs' block).
constexpr int64_t kCompressRows = 128;

// y += the decoded rows (a prediction plus its decoded residual, Codec::decode_add) over
// threads in whole blocks (the encoder's chunks).
void decode_add_rows(const Codec& c, const uint8_t* in, int64_t rows, float* y) {
  const int64_t br = c.block_rows(), blocks = rows / br, C = c.dim();
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    c.decode_add(in + c.encoded_bytes(b0 * br), (b1 - b0) * br, y + b0 * br * C);
  }, std::max<int64_t>(1, 32 / br));
}

// Rows the decoder takes through one layer at a time (rounded to the codecs' block): 96 rows of
// the default model's 192-wide K and V are 72 KiB each, so the GEMMs' outputs are still in L2
// when the residuals are added and the value GEMM reads the keys.
constexpr int64_t kRebuildRows = 96;

class CompressedCache final : public KvCache {
 public:
  CompressedCache(const KvShape& shape, CompressedCacheOptions opt)
      : shape_(shape), opt_(std::move(opt)), rope_(shape) {
    const int64_t C = shape.width();
    if (shape.n_layers <= 0 || C <= 0 || shape.max_tokens <= 0)
      fail("kv cache {}: invalid shape (layers {}, width {}, max tokens {})", opt_.name, shape.n_layers, C, shape.max_tokens);
    if (opt_.sinks < 0 || opt_.buffer < 1)
      fail("kv cache {}: sinks must be >= 0 and buffer >= 1 (got p={}, b={})", opt_.name, opt_.sinks, opt_.buffer);
    if (!opt_.key_codec || !opt_.value_codec) fail("kv cache {}: key and value codecs are required", opt_.name);
    if (!opt_.layer0_key_codec) opt_.layer0_key_codec = opt_.key_codec;
    if (!opt_.layer0_value_codec) opt_.layer0_value_codec = opt_.value_codec;
    std::vector<const Codec*> all = {opt_.key_codec.get(), opt_.value_codec.get(), opt_.layer0_key_codec.get(),
                                      opt_.layer0_value_codec.get()};
    for (auto* list : {&opt_.layer_key_codecs, &opt_.layer_value_codecs}) {
      if (!list->empty() && int64_t(list->size()) != shape.n_layers)
        fail("kv cache {}: {} per-layer codecs for {} layers", opt_.name, list->size(), shape.n_layers);
      for (const auto& c : *list)
        if (c) all.push_back(c.get());
    }
    block_ = 1;
    for (const Codec* c : all) {
      if (c->dim() != C) fail("kv cache {}: codec {} is for rows of {}, the KV width is {}", opt_.name, c->spec(), c->dim(), C);
      block_ = std::lcm(block_, c->block_rows());
    }
    if (opt_.keys_after_rope && opt_.adapters) fail("kv cache {}: keys after RoPE need a cache without predictors", opt_.name);
    if (const Adapters* a = opt_.adapters.get()) {
      if (a->model.n_layers != shape.n_layers || a->model.kv_width != C)
        fail("kv cache {}: adapters for {} layers of width {}, the model has {} layers of width {}",
             opt_.name, a->model.n_layers, a->model.kv_width, shape.n_layers, C);
    }
  }

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return opt_.name; }

  int add_sequence() override {
    seqs_.emplace_back();
    Seq& s = seqs_.back();
    const size_t L = size_t(shape_.n_layers);
    s.sink_k.resize(L); s.sink_v.resize(L); s.buf_k.resize(L); s.buf_v.resize(L);
    s.code_k.resize(L); s.code_v.resize(L);
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override {
    Seq& s = at(seq);
    for (auto* v : {&s.sink_k, &s.sink_v, &s.buf_k, &s.buf_v})
      for (auto& x : *v) { x.clear(); x.shrink_to_fit(); }
    for (auto* v : {&s.code_k, &s.code_v})
      for (auto& x : *v) PageVector<uint8_t>().swap(x);
    std::vector<int32_t>().swap(s.pos);
    s.n_pos = s.n_tokens = s.n_sinks = s.n_buf = s.n_compressed = 0;
    ++generation_;
  }
  int64_t n_tokens(int seq) const override { return at(seq).n_pos; }

  void begin_step(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || s.n_pos + n > shape_.max_tokens)
      fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq, s.n_pos, n, shape_.max_tokens);
    cur_ = seq;
    step_n_ = n;
    in_step_ = true;
    // Sinks are the first P positions (a dropped one is not replaced).
    step_sinks_ = std::clamp<int64_t>(opt_.sinks - s.n_pos, 0, n);
    // When the buffer will hold >= B tokens after this step, its first whole codec blocks are
    // coded: each layer at its finish_layer (in model order), the others in end_step.
    const int64_t nb = s.n_buf + n - step_sinks_;
    step_code_ = nb >= opt_.buffer ? nb - nb % block_ : 0;
    finished_ = 0;
    // Rows are stored in position order: sinks, compressed chunks, buffer.
    s.pos.resize(size_t(s.n_tokens));
    for (int64_t i = 0; i < n; ++i) s.pos.push_back(int32_t(s.n_pos + i));
    rope_.ensure(s.n_pos + n);
    ++generation_;  // views of the previous step are stale
  }

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    check_layer(layer);
    const int64_t C = shape_.width();
    const size_t l = size_t(layer);
    check_unfinished(layer, "append to");
    if (int64_t(s.sink_k[l].size()) != s.n_sinks * C || int64_t(s.buf_k[l].size()) != s.n_buf * C)
      fail("kv cache: append to layer {} twice in one step", layer);
    if (opt_.keys_after_rope && rope_.enabled(layer)) {  // rows at positions n_pos .. + n - 1
      roped_.assign(k, k + step_n_ * C);
      for (int64_t i = 0; i < step_n_; ++i) rope_.rotate(layer, roped_.data() + i * C, s.n_pos + i);
      k = roped_.data();
    }
    append_halves(k, step_sinks_ * C, s.sink_k[l]);
    append_halves(v, step_sinks_ * C, s.sink_v[l]);
    append_halves(k + step_sinks_ * C, (step_n_ - step_sinks_) * C, s.buf_k[l]);
    append_halves(v + step_sinks_ * C, (step_n_ - step_sinks_) * C, s.buf_v[l]);
  }

  const RopeTable* key_rope(int layer) const override {
    return layer >= 0 && layer < shape_.n_layers ? rope_.rotating_table(layer) : nullptr;
  }

  KvView read(int layer) override {
    Seq& s = at(cur_);
    check_layer(layer);
    const int64_t C = shape_.width();
    const size_t l = size_t(layer);
    const int64_t ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    check_appended(s, layer, "read of");
    const int64_t T = ns + s.n_compressed + nb;
    ensure_views(T);
    float* vk = view_k_.data();
    float* vv = view_v_.data();
    halves_to_floats(s.sink_k[l].data(), ns * C, vk);
    halves_to_floats(s.sink_v[l].data(), ns * C, vv);
    if (s.n_compressed > 0) rebuild_to(s, layer, ns);
    halves_to_floats(s.buf_k[l].data(), nb * C, vk + (ns + s.n_compressed) * C);
    halves_to_floats(s.buf_v[l].data(), nb * C, vv + (ns + s.n_compressed) * C);
    KvView view;
    view.dtype = KvDtype::F32;
    view.k = vk;
    view.v = vv;
    view.row_stride = C;
    view.n_tokens = T;
    view.pos = s.pos.data();
    view.k_roped = opt_.keys_after_rope;
    return view;
  }

  // Attention on the stored form: exact sinks and buffer read as fp16 in place; coded chunks
  // read from their codes a tile at a time (no predictors: keys stored rotated), or, with
  // predictors, the layer's reconstruction (which the next layer's predictor needs anyway)
  // read as f32 with keys rotated per tile.
  void attend(int layer, const KvAttention& a) override {
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    Seq& s = at(cur_);
    check_layer(layer);
    const int64_t C = shape_.width();
    const size_t l = size_t(layer);
    const int64_t ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    check_appended(s, layer, "attention on");
    if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
    std::vector<KvSegment> segs;
    auto exact = [&](const PageVector<uint16_t>& k, const PageVector<uint16_t>& v, int64_t n, int64_t row0) {
      if (n == 0) return;
      KvSegment g;
      g.n = n;
      g.pos = s.pos.data() + row0;
      g.k_roped = opt_.keys_after_rope;
      g.dtype = KvDtype::F16;
      g.k = k.data();
      g.v = v.data();
      g.stride = C;
      segs.push_back(std::move(g));
    };
    exact(s.sink_k[l], s.sink_v[l], ns, 0);
    if (s.n_compressed > 0 && has_predictors()) {
      // Predictor chain: rebuild this layer's compressed rows from layer - 1's (kept: this
      // layer's reconstruction is what the next layer's predictor reads).
      // Rows at the offset read() uses (after the sinks), so that a read() of the layer after its
      // attention finds the reconstruction in place (kv/layer_share.h reads source layers).
      // Unless it is at hand, the layer is rebuilt by attention itself, a tile at a time on the
      // thread that then attends to it (KvSegment::produce), over layer - 1's reconstruction in
      // the same rows (decode_chunk: each row is read by its own tile only).
      ensure_views(ns + s.n_compressed);
      const bool fused = !recon_at(layer, ns);
      if (fused && layer > 0) rebuild_to(s, layer - 1, ns);
      KvSegment g;
      g.n = s.n_compressed;
      g.pos = s.pos.data() + ns;
      g.dtype = KvDtype::F32;
      g.k = view_k_.data() + ns * C;
      g.v = view_v_.data() + ns * C;
      g.stride = C;
      if (fused) {
        float* yk = view_k_.data() + ns * C;
        float* yv = view_v_.data() + ns * C;
        g.block = block_;
        g.produce = [this, &s, layer, yk, yv](int64_t r0, int64_t r1) { decode_chunk(s, layer, r0, r1 - r0, yk, yv); };
      }
      segs.push_back(std::move(g));
      exact(s.buf_k[l], s.buf_v[l], nb, ns + s.n_compressed);
      attend_segments(shape_, rope_, layer, a, s.pos.data() + s.n_tokens, segs);
      if (fused) set_recon(layer, ns);
      return;
    } else if (s.n_compressed > 0) {
      // All compressed rows of the layer: one code stream per K/V, read by attention a tile
      // at a time (kv/attend.h: decoded, or scored in the codecs' inner bases).
      KvSegment g;
      g.n = s.n_compressed;
      g.pos = s.pos.data() + ns;
      g.k_roped = opt_.keys_after_rope;
      g.block = block_;
      g.k_codec = &kc(layer);
      g.v_codec = &vc(layer);
      g.k_codes = s.code_k[l].data();
      g.v_codes = s.code_v[l].data();
      segs.push_back(std::move(g));
    }
    exact(s.buf_k[l], s.buf_v[l], nb, ns + s.n_compressed);
    attend_segments(shape_, rope_, layer, a, s.pos.data() + s.n_tokens, segs);
  }

  // Codes the layer's share of this step's chunk now (the same codes end_step would write), so
  // that its exact rows are released before the next layer appends: a 512-row prefill step then
  // holds one layer's exact step rows at a time instead of every layer's (11.25 MiB for
  // SmolLM2's 30 layers x 2 x 192 fp16 values a row). Attention already used them exactly.
  // Layers are coded in model order (the predictor chain reads layer l - 1's reconstruction);
  // a layer finished out of that order is left to end_step.
  void finish_layer(int layer) override {
    if (!in_step_) fail("kv cache: finish_layer({}) outside a step", layer);
    Seq& s = at(cur_);
    check_layer(layer);
    check_unfinished(layer, "finish of");
    check_appended(s, layer, "finish of");
    if (layer != finished_) return;
    if (step_code_ > 0) code_layer(s, layer, step_code_);
    finished_ = layer + 1;
  }

  void end_step() override {
    Seq& s = at(cur_);
    if (in_step_ && step_code_ > 0) {
      for (int l = finished_; l < shape_.n_layers; ++l) code_layer(s, l, step_code_);
    }
    s.n_tokens += step_n_;
    s.n_pos += step_n_;
    s.n_sinks += step_sinks_;
    s.n_buf += step_n_ - step_sinks_ - step_code_;
    s.n_compressed += step_code_;
    step_n_ = step_sinks_ = step_code_ = 0;
    finished_ = 0;
    in_step_ = false;
    for (auto* h : {&enc_k_[0], &enc_k_[1], &enc_v_[0], &enc_v_[1]}) PageVector<float>().swap(*h);
    ++generation_;
  }

  int64_t live_bytes() const override {
    int64_t total = 0;
    for (const Seq& s : seqs_) total += exact_bytes(s) + code_bytes(s, -1);
    return total;
  }
  int64_t fixed_bytes() const override { return opt_.adapters ? opt_.adapters->bytes_in_memory() : 0; }

  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    // Per original value: the denominator counts every position, dropped rows included.
    const double values = double(s.n_pos) * double(shape_.n_layers) * 2.0 * double(shape_.width());
    auto bits = [&](int64_t bytes) { return values > 0 ? 8.0 * double(bytes) / values : 0.0; };
    const int64_t row = 2 * 2 * shape_.width() * shape_.n_layers;  // fp16 K+V bytes of a token
    const int64_t l0 = code_bytes(s, 0), all = code_bytes(s, -1);
    return {{"codes+scales, layer 0", bits(l0)},
            {"codes+scales, layers >= 1", bits(all - l0)},
            {"exact sinks (fp16)", bits(s.n_sinks * row)},
            {"exact buffer (fp16)", bits(s.n_buf * row)}};
  }

  // The stored bytes mean the same only under the same codecs, P, B and predictors.
  std::string state_format() const override {
    std::string f = "compressed k=" + opt_.key_codec->spec() + " v=" + opt_.value_codec->spec() +
                    " k0=" + opt_.layer0_key_codec->spec() + " v0=" + opt_.layer0_value_codec->spec() +
                    " p=" + std::to_string(opt_.sinks) + " b=" + std::to_string(opt_.buffer) +
                    (opt_.keys_after_rope ? " keys=roped" : "");
    if (opt_.adapters) f += fmt::format(" adapters={:016x}", opt_.adapters->file_checksum);
    return f;
  }

  // State: "meta" = {n_tokens, n_sinks, n_buf, n_compressed}, "pos", and per layer L the exact
  // sinks "sk.L"/"sv.L" and buffer "bk.L"/"bv.L" (fp16 rows) and the code streams "ck.L"/"cv.L".
  void save_state(int seq, KvStateOut& out) const override {
    const Seq& s = at(seq);
    if (s.n_pos != s.n_tokens) fail("kv cache {}: a sequence whose rows were dropped cannot be saved", opt_.name);
    meta_ = {s.n_tokens, s.n_sinks, s.n_buf, s.n_compressed};
    put_section(out, "meta", meta_);
    put_section(out, "pos", s.pos);
    for (size_t l = 0; l < size_t(shape_.n_layers); ++l) {
      const std::string L = std::to_string(l);
      put_section(out, "sk." + L, s.sink_k[l]);
      put_section(out, "sv." + L, s.sink_v[l]);
      put_section(out, "bk." + L, s.buf_k[l]);
      put_section(out, "bv." + L, s.buf_v[l]);
      put_section(out, "ck." + L, s.code_k[l]);
      put_section(out, "cv." + L, s.code_v[l]);
    }
  }

  void load_state(int seq, const KvStateIn& in) override {
    Seq& s = at(seq);
    const std::string f = opt_.name;
    std::vector<int64_t> m;
    get_section(in, f, "meta", m, 4);
    const int64_t n = m[0], ns = m[1], nb = m[2], nc = m[3];
    // The invariants of end_step: sinks fill first; codes only after the sinks are full and in
    // whole blocks; the counts add up.
    if (n < 0 || n > shape_.max_tokens || ns < 0 || nb < 0 || nc < 0 || ns > n || nb > n || nc > n ||
        ns > opt_.sinks || ns + nb + nc != n || (ns < opt_.sinks && nb + nc > 0) || nc % block_ != 0)
      fail("saved {} state: inconsistent counts (tokens {}, sinks {}, buffer {}, coded {}; P = {}, "
           "context {})", f, n, ns, nb, nc, opt_.sinks, shape_.max_tokens);
    Seq t;
    get_section(in, f, "pos", t.pos, n);
    check_dense_positions(t.pos, n, f);
    const size_t L = size_t(shape_.n_layers);
    const int64_t C = shape_.width();
    t.sink_k.resize(L); t.sink_v.resize(L); t.buf_k.resize(L); t.buf_v.resize(L);
    t.code_k.resize(L); t.code_v.resize(L);
    for (size_t l = 0; l < L; ++l) {
      const std::string S = std::to_string(l);
      get_section(in, f, "sk." + S, t.sink_k[l], ns * C);
      get_section(in, f, "sv." + S, t.sink_v[l], ns * C);
      get_section(in, f, "bk." + S, t.buf_k[l], nb * C);
      get_section(in, f, "bv." + S, t.buf_v[l], nb * C);
      get_section(in, f, "ck." + S, t.code_k[l], kc(int(l)).encoded_bytes(nc));
      get_section(in, f, "cv." + S, t.code_v[l], vc(int(l)).encoded_bytes(nc));
    }
    t.n_pos = t.n_tokens = n; t.n_sinks = ns; t.n_buf = nb; t.n_compressed = nc;
    s = std::move(t);
    rope_.ensure(n);
    ++generation_;
  }

  // Keeps the first n positions where the storage allows: any number of sinks or buffered rows,
  // coded rows in whole codec blocks (a row's codes do not depend on the rows after it).
  int64_t truncate(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n >= s.n_pos) return s.n_pos;
    n = std::max<int64_t>(n, 0);
    if (s.n_pos != s.n_tokens) {  // dropped rows: the prefix is no longer whole
      clear(seq);
      return 0;
    }
    const int64_t C = shape_.width();
    const size_t L = size_t(shape_.n_layers);
    if (n <= s.n_sinks) {
      for (size_t l = 0; l < L; ++l) {
        s.sink_k[l].resize(size_t(n * C)); s.sink_v[l].resize(size_t(n * C));
        s.buf_k[l].clear(); s.buf_v[l].clear(); s.code_k[l].clear(); s.code_v[l].clear();
      }
      s.n_sinks = n; s.n_buf = s.n_compressed = 0;
    } else if (n <= s.n_sinks + s.n_compressed) {
      const int64_t nc = (n - s.n_sinks) / block_ * block_;
      for (size_t l = 0; l < L; ++l) {
        s.buf_k[l].clear(); s.buf_v[l].clear();
        s.code_k[l].resize(size_t(kc(int(l)).encoded_bytes(nc)));
        s.code_v[l].resize(size_t(vc(int(l)).encoded_bytes(nc)));
      }
      s.n_compressed = nc; s.n_buf = 0;
    } else {
      s.n_buf = n - s.n_sinks - s.n_compressed;
      for (size_t l = 0; l < L; ++l) { s.buf_k[l].resize(size_t(s.n_buf * C)); s.buf_v[l].resize(size_t(s.n_buf * C)); }
    }
    s.n_pos = s.n_tokens = s.n_sinks + s.n_compressed + s.n_buf;
    s.pos.resize(size_t(s.n_tokens));
    ++generation_;
    return s.n_tokens;
  }

  // Removes rows from the sinks, the codes (whole rows: every codec must code one row per
  // block, so a row's codes are bytes of their own) and the buffer of every layer. Each
  // remaining row's reconstruction is unchanged: the predictors map a token's layer l - 1 to its
  // layer l, row by row, so dropping a token from every layer leaves the others' chains intact.
  bool can_drop_rows() const override { return block_ == 1; }
  void drop_rows(int seq, std::span<const int32_t> positions) override {
    Seq& s = at(seq);
    if (step_n_ != 0) fail("kv cache {}: rows can only be dropped between steps", opt_.name);
    const std::vector<uint8_t> drop = rows_to_drop({s.pos.data(), size_t(s.n_tokens)}, positions, opt_.name);
    const int64_t ns = s.n_sinks, nc = s.n_compressed, C = shape_.width();
    const auto dropped = [&](int64_t r0, int64_t r1) {
      return std::count(drop.begin() + std::ptrdiff_t(r0), drop.begin() + std::ptrdiff_t(r1), uint8_t(1));
    };
    if (block_ != 1 && dropped(ns, ns + nc) > 0)
      fail("kv cache {}: its codecs code rows in blocks of {}, single coded rows cannot be dropped", opt_.name, block_);
    // Keeps the rows of region [r0, r0 + n) whose flag is clear, `bytes` per row.
    auto compact = [&](auto& v, int64_t r0, int64_t n, int64_t bytes_per_row) {
      using T = typename std::decay_t<decltype(v)>::value_type;
      const int64_t e = bytes_per_row / int64_t(sizeof(T));
      int64_t out = 0;
      for (int64_t r = 0; r < n; ++r) {
        if (drop[size_t(r0 + r)]) continue;
        if (out != r) std::memmove(v.data() + out * e, v.data() + r * e, size_t(bytes_per_row));
        ++out;
      }
      v.resize(size_t(out * e));
    };
    for (size_t l = 0; l < size_t(shape_.n_layers); ++l) {
      compact(s.sink_k[l], 0, ns, 2 * C);
      compact(s.sink_v[l], 0, ns, 2 * C);
      compact(s.buf_k[l], ns + nc, s.n_buf, 2 * C);
      compact(s.buf_v[l], ns + nc, s.n_buf, 2 * C);
      if (dropped(ns, ns + nc) > 0) {  // block_ == 1 here: encoded_bytes(1) is a row's bytes
        compact(s.code_k[l], ns, nc, kc(int(l)).encoded_bytes(1));
        compact(s.code_v[l], ns, nc, vc(int(l)).encoded_bytes(1));
      }
    }
    const int64_t ds = dropped(0, ns), dc = dropped(ns, ns + nc), db = dropped(ns + nc, s.n_tokens);
    int64_t out = 0;
    for (int64_t r = 0; r < s.n_tokens; ++r)
      if (!drop[size_t(r)]) s.pos[size_t(out++)] = s.pos[size_t(r)];
    s.pos.resize(size_t(out));
    s.n_sinks -= ds; s.n_compressed -= dc; s.n_buf -= db;
    s.n_tokens = out;
    ++generation_;
  }

 private:
  struct Seq {
    // n_tokens: rows held (n_sinks + n_compressed + n_buf); n_pos: positions consumed (more
    // than the rows once drop_rows removed some).
    int64_t n_tokens = 0, n_sinks = 0, n_buf = 0, n_compressed = 0, n_pos = 0;
    std::vector<int32_t> pos;  // position of every row, in storage order (all layers alike)
    // Per layer, (rows, C) fp16; every buffer that grows with the context lives in its own
    // pages (util/page_vector.h).
    std::vector<PageVector<uint16_t>> sink_k, sink_v, buf_k, buf_v;
    // Per layer, the codes of all compressed rows in row order (chunks appended; every chunk is
    // a whole number of codec blocks, so row r's codes start at encoded_bytes(r)).
    std::vector<PageVector<uint8_t>> code_k, code_v;
  };

  bool has_predictors() const { return opt_.adapters != nullptr; }
  const Codec& kc(int l) const {
    if (l == 0) return *opt_.layer0_key_codec;
    const auto& p = opt_.layer_key_codecs;
    return !p.empty() && p[size_t(l)] ? *p[size_t(l)] : *opt_.key_codec;
  }
  const Codec& vc(int l) const {
    if (l == 0) return *opt_.layer0_value_codec;
    const auto& p = opt_.layer_value_codecs;
    return !p.empty() && p[size_t(l)] ? *p[size_t(l)] : *opt_.value_codec;
  }
  const AffineMap* kmap(int l) const {
    if (l == 0 || !opt_.adapters) return nullptr;
    const AffineMap& m = opt_.adapters->layers[size_t(l)].key;
    return m.empty() ? nullptr : &m;
  }
  const AffineMap* vmap(int l) const {
    if (l == 0 || !opt_.adapters) return nullptr;
    const AffineMap& m = opt_.adapters->layers[size_t(l)].value;
    return m.empty() ? nullptr : &m;
  }

  Seq& at(int seq) {
    if (seq < 0 || seq >= int(seqs_.size())) fail("kv cache: no sequence {} (have {})", seq, seqs_.size());
    return seqs_[size_t(seq)];
  }
  const Seq& at(int seq) const { return const_cast<CompressedCache*>(this)->at(seq); }
  void check_layer(int layer) const {
    if (layer < 0 || layer >= shape_.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape_.n_layers);
  }
  // The layer was not coded by finish_layer in this step (nothing may touch it until end_step).
  void check_unfinished(int layer, const char* what) const {
    if (in_step_ && layer < finished_) fail("kv cache: {} layer {} after its finish_layer in this step", what, layer);
  }
  // The layer holds this step's rows (append came first): `what` names the caller in the error.
  void check_appended(const Seq& s, int layer, const char* what) const {
    check_unfinished(layer, what);
    const int64_t C = shape_.width(), ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    if (int64_t(s.sink_k[size_t(layer)].size()) != ns * C || int64_t(s.buf_k[size_t(layer)].size()) != nb * C)
      fail("kv cache: {} layer {} before its append in this step", what, layer);
  }

  int64_t exact_bytes(const Seq& s) const {
    int64_t b = 0;
    for (size_t l = 0; l < s.sink_k.size(); ++l)
      b += int64_t(s.sink_k[l].size() + s.sink_v[l].size() + s.buf_k[l].size() + s.buf_v[l].size()) * 2;
    return b;
  }
  // Bytes of codes of layer `layer`, or of all layers when layer < 0.
  int64_t code_bytes(const Seq& s, int layer) const {
    int64_t b = 0;
    for (size_t l = 0; l < s.code_k.size(); ++l)
      if (layer < 0 || size_t(layer) == l) b += int64_t(s.code_k[l].size() + s.code_v[l].size());
    return b;
  }

  void ensure_views(int64_t T) {
    const size_t need = size_t(T * shape_.width());
    if (view_k_.size() < need) { view_k_.resize(need); view_v_.resize(need); }
  }

  // One layer of the decoder over all compressed rows, in place: rows holding layer l - 1's
  // reconstruction (l >= 1) become layer l's, (map(prev) or 0) + decoded codes, a chunk of rows
  // at a time through both streams (decode_chunk), chunks spread over threads.
  void decode_layer(const Seq& s, int l, float* k, float* v) {
    const int64_t N = s.n_compressed;
    const int64_t chunk = std::max<int64_t>(block_, kRebuildRows / block_ * block_);
    parallel_for((N + chunk - 1) / chunk, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t r0 = c * chunk;
        decode_chunk(s, l, r0, std::min(chunk, N - r0), k, v);
      }
    });
  }

  // Rows [r0, r0 + m) of one layer (r0 and m whole codec blocks), in place over layer l - 1's
  // reconstruction of the same rows (k, v: row 0 of the compressed rows): the key prediction,
  // its residual added, then the value prediction that reads those keys and layer l - 1's
  // values, its residual added. A row of layer l reads only the same row of layer l - 1, so one
  // slot of rows serves the whole chain (not one per layer of a pair: 2 x T x C floats less);
  // layer l's chunk is built in m x C scratch rows per stream (in cache between the passes) and
  // then copied over layer l - 1's. Row by row the same sums as whole-layer passes: the GEMM's
  // order does not depend on the rows in a call (ops/affine_rows.h) and Codec::decode_add adds
  // element by element.
  void decode_chunk(const Seq& s, int l, int64_t r0, int64_t m, float* k, float* v) const {
    // Pieces of at most ~kRebuildRows rows (whole codec blocks) bound the scratch rows.
    const int64_t piece = std::max<int64_t>(block_, kRebuildRows / block_ * block_);
    for (int64_t p = 0; p < m; p += piece) decode_piece(s, l, r0 + p, std::min(piece, m - p), k, v);
  }
  void decode_piece(const Seq& s, int l, int64_t r0, int64_t m, float* k, float* v) const {
    const int64_t C = shape_.width();
    thread_local std::vector<float> scratch;  // reduced-rank intermediates
    thread_local std::vector<float> next_k, next_v;  // the piece of layer l while l - 1's is read
    const Codec& kcod = kc(l);
    const Codec& vcod = vc(l);
    const uint8_t* kcodes = s.code_k[size_t(l)].data() + kcod.encoded_bytes(r0);
    const uint8_t* vcodes = s.code_v[size_t(l)].data() + vcod.encoded_bytes(r0);
    float* xk = k + r0 * C;  // layer l - 1's rows in, layer l's out
    float* xv = v + r0 * C;
    const AffineMap* km = kmap(l);
    const AffineMap* vm = vmap(l);
    // A stream is built aside only when a predictor reads its old rows (the key map reads
    // K̂_{l-1} (and V̂_{l-1} when wide), the value map V̂_{l-1}, the new K̂_l and, when wide,
    // K̂_{l-1}): the old rows stay in place until both streams of the piece are made.
    const int64_t kin = km != nullptr ? km->in / C : 0, vin = vm != nullptr ? vm->in / C : 0;
    float* yk = xk;
    float* yv = xv;
    if (km != nullptr || vin == 3) {
      if (next_k.size() < size_t(m * C)) next_k.resize(size_t(m * C));
      yk = next_k.data();
    }
    if (vm != nullptr) {
      if (next_v.size() < size_t(m * C)) next_v.resize(size_t(m * C));
      yv = next_v.data();
    }
    if (km != nullptr) {
      const AffineInput in[2] = {{xk, C, C}, {xv, C, C}};
      km->apply(m, in, int(kin), yk, C, scratch);
      kcod.decode_add(kcodes, m, yk);
    } else {
      kcod.decode(kcodes, m, yk);
    }
    if (vm != nullptr) {
      const AffineInput in[3] = {{yk, C, C}, {xv, C, C}, {xk, C, C}};
      vm->apply(m, in, int(vin), yv, C, scratch);
      vcod.decode_add(vcodes, m, yv);
    } else {
      vcod.decode(vcodes, m, yv);
    }
    if (yk != xk) std::copy_n(yk, m * C, xk);
    if (yv != xv) std::copy_n(yv, m * C, xv);
  }

  // Fills rows [row0, row0 + n_compressed) of the layer's view slot with its reconstruction,
  // rebuilding earlier layers first when the previous layer's is not at hand.
  bool recon_at(int layer, int64_t row0) const {
    return recon_gen_ == generation_ && recon_seq_ == cur_ && recon_layer_ == layer && recon_row0_ == row0;
  }
  void set_recon(int layer, int64_t row0) {
    recon_gen_ = generation_;
    recon_seq_ = cur_;
    recon_layer_ = layer;
    recon_row0_ = row0;
  }

  void rebuild_to(const Seq& s, int layer, int64_t row0) {
    const int64_t C = shape_.width();
    if (recon_at(layer, row0)) return;  // at hand
    int from = layer;
    if (layer > 0 && !recon_at(layer - 1, row0)) from = 0;  // out of protocol order: start over from layer 0
    for (int l = from; l <= layer; ++l) decode_layer(s, l, view_k_.data() + row0 * C, view_v_.data() + row0 * C);
    set_recon(layer, row0);
  }

  // The encoder, one layer at a time (layers in model order within a step): codes the first n
  // buffered rows of layer l, a chunk of rows at a time (a multiple of the codecs' block,
  // ~kCompressRows, so the scratch is a chunk's), appends the codes to the layer's streams and
  // drops those rows from its buffer, releasing their pages. Predictors map rows one by one and
  // codecs code whole blocks, so the codes depend neither on the chunking nor on which call
  // codes which layer. With predictors, the reconstruction (prediction + decoded residual) of
  // the n rows is kept for the next layer's predictors (enc_k_/enc_v_, slot l & 1); without,
  // nothing reads it and it is not computed.
  int64_t encode_nanoseconds() const override { return encode_ns_; }

  void code_layer(Seq& s, int l, int64_t n) {
    const auto t0 = std::chrono::steady_clock::now();
    code_layer_rows(s, l, n);
    encode_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  }
  void code_layer_rows(Seq& s, int l, int64_t n) {
    const int64_t C = shape_.width();
    const int64_t chunk = std::max<int64_t>(block_, kCompressRows / block_ * block_);
    const bool chain = has_predictors();
    const int cur = l & 1, prev = (l + 1) & 1;
    if (chain) {
      for (auto* h : {&enc_k_[cur], &enc_v_[cur]})
        if (int64_t(h->size()) < n * C) h->resize(size_t(n * C));
    }
    std::vector<float> x(size_t(std::min(n, chunk) * C));
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
      const int64_t m = std::min(chunk, n - r0);
      // Inputs of the predictors (read only when the layer has them: l >= 1 and a chain).
      const float* pk = chain && l > 0 ? enc_k_[prev].data() + r0 * C : nullptr;
      const float* pv = chain && l > 0 ? enc_v_[prev].data() + r0 * C : nullptr;
      float* hk = chain ? enc_k_[cur].data() + r0 * C : nullptr;
      float* hv = chain ? enc_v_[cur].data() + r0 * C : nullptr;
      // Inputs by the maps' widths (kv/adapters.h): key [K̂_{l-1} (; V̂_{l-1})], value
      // [K̂_l ; V̂_{l-1} (; K̂_{l-1})].
      const AffineInput kin[2] = {{pk, C, C}, {pv, C, C}};
      const AffineInput vin[3] = {{hk, C, C}, {pv, C, C}, {pk, C, C}};
      const AffineMap* km = kmap(l);
      const AffineMap* vm = vmap(l);
      encode_stream(kc(l), km, s.buf_k[size_t(l)].data() + r0 * C, m, kin, km ? int(km->in / C) : 1,
                    grow(s.code_k[size_t(l)], kc(l).encoded_bytes(m)), x, hk);
      encode_stream(vc(l), vm, s.buf_v[size_t(l)].data() + r0 * C, m, vin, vm ? int(vm->in / C) : 2,
                    grow(s.code_v[size_t(l)], vc(l).encoded_bytes(m)), x, hv);
    }
    for (auto* b : {&s.buf_k[size_t(l)], &s.buf_v[size_t(l)]}) {
      b->erase(b->begin(), b->begin() + n * C);
      b->shrink_to_fit();  // the coded rows' pages go back to the system (util/page_vector.h)
    }
  }

  // Appends `bytes` to a code stream and returns where they start. A stream is mapped from its
  // first code on (util/page_vector.h: only written pages are resident): its first capacities
  // would otherwise be heap chunks of a few tens of KiB per layer and stream, freed into the
  // heap as it grows, where glibc kept them resident (higgs4 at 2,464 tokens: the main heap
  // held 3.1 MiB at the peak, 0.9 with streams mapped from the start; fp16, q4_0, kivi2 0.7-0.9).
  static uint8_t* grow(PageVector<uint8_t>& codes, int64_t bytes) {
    const size_t o = codes.size();
    if (codes.capacity() < kPageVectorMapBytes) codes.reserve(std::max(kPageVectorMapBytes, o + size_t(bytes)));
    codes.resize(o + size_t(bytes));
    return codes.data() + o;
  }

  // Codes one stream of one layer: target rows (fp16) -> residual -> codes; writes the
  // reconstruction (prediction + decoded residual) to `recon` (null: not wanted; then `map` is
  // null too).
  void encode_stream(const Codec& codec, const AffineMap* map, const uint16_t* target, int64_t n,
                     const AffineInput* inputs, int n_inputs, uint8_t* codes,
                     std::vector<float>& x, float* recon) {
    const int64_t C = shape_.width();
    halves_to_floats(target, n * C, x.data());
    if (map) {
      map->apply(n, inputs, n_inputs, recon, C, scratch_);  // recon := prediction
      for (int64_t i = 0; i < n * C; ++i) x[size_t(i)] = x[size_t(i)] - recon[i];
      encode_rows(codec, x.data(), n, codes);
      decode_add_rows(codec, codes, n, recon);
    } else {
      encode_rows(codec, x.data(), n, codes);
      if (recon != nullptr) decode_rows(codec, codes, n, recon);
    }
  }

  KvShape shape_;
  CompressedCacheOptions opt_;
  KvRope rope_;
  int64_t block_ = 1;  // chunk sizes are multiples of this (lcm of the codecs' block rows)
  std::vector<float> roped_;  // append's rotated keys
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0, step_sinks_ = 0;
  int64_t step_code_ = 0;  // buffered rows this step codes (0: none)
  int finished_ = 0;       // layers [0, finished_) were coded by finish_layer in this step
  bool in_step_ = false;
  PageVector<float> enc_k_[2], enc_v_[2];  // the encoder's reconstructions (layers l - 1 and l)
  mutable std::vector<int64_t> meta_;  // save_state's counters (must outlive the writer)
  uint64_t generation_ = 0;  // bumps whenever stored tokens or the step change
  int64_t encode_ns_ = 0;    // encode_nanoseconds(): code_layer's wall time, summed
  // Decoder scratch (not live storage): one view slot of rows, which the rebuild turns from
  // layer l - 1's reconstruction into layer l's in place (decode_chunk).
  PageVector<float> view_k_, view_v_;
  std::vector<float> scratch_;
  uint64_t recon_gen_ = ~0ull;
  int recon_seq_ = -1, recon_layer_ = -1;
  int64_t recon_row0_ = -1;
};

}  // namespace

std::unique_ptr<KvCache> make_compressed_cache(const KvShape& shape, CompressedCacheOptions opt) {
  return std::make_unique<CompressedCache>(shape, std::move(opt));
}

}  // namespace aquakv
