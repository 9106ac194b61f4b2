// The plain KV cache (kv/kv_cache.h): keys (rotated at write) and values stored as 16-bit or
// 32-bit floats, one growing buffer per (sequence, layer, K|V) in its own pages
// (util/page_vector.h), positions per sequence.
// Sliding-window layers (shape.window[l] = W > 0) keep only the rows a later query can see: at
// the end of a step that leaves the sequence at T tokens, rows at positions <= T - W are
// dropped (the next query, at position T, sees T-W+1..T), so such a layer holds at most W-1
// rows between steps (plus the step's rows during it). drop_rows (eviction) removes rows of
// every layer; rows are then fewer than positions, and each row keeps its position.
// attend() reads the stored rows in place (kv/attend.h): fp16 rows are converted in registers
// by the decode kernels, never copied to an f32 cache.
#include <algorithm>
#include <cstring>
#include <vector>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/page_vector.h"

namespace aquakv {
namespace {

class PlainCache final : public KvCache {
 public:
  PlainCache(const KvShape& shape, KvDtype dtype) : shape_(shape), dtype_(dtype), rope_(check(shape)) {}

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return dtype_ == KvDtype::F16 ? "fp16" : "f32"; }

  int add_sequence() override {
    seqs_.emplace_back();
    seqs_.back().layers.resize(size_t(shape_.n_layers));
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override {
    Seq& s = at(seq);
    s.n_tokens = s.rows = 0;
    std::vector<int32_t>().swap(s.pos);
    for (auto& l : s.layers) { l.k.clear(); l.k.shrink_to_fit(); l.v.clear(); l.v.shrink_to_fit(); l.first = 0; }
  }
  int64_t n_tokens(int seq) const override { return at(seq).n_tokens; }

  void begin_step(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || s.n_tokens + n > shape_.max_tokens) {
      fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq,
           s.n_tokens, n, shape_.max_tokens);
    }
    cur_ = seq;
    step_n_ = n;
    s.pos.resize(size_t(s.rows));
    for (int64_t i = 0; i < n; ++i) s.pos.push_back(int32_t(s.n_tokens + i));
    rope_.ensure(s.n_tokens + n);
  }

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    check_layer(layer);
    Layer& l = s.layers[size_t(layer)];
    const int64_t c = shape_.width();
    const int64_t held = s.rows - l.first;  // rows held before this step
    const size_t need = size_t((held + step_n_) * c * elem());
    if (l.k.size() != size_t(held * c * elem())) fail("kv cache: append to layer {} twice in one step", layer);
    if (l.k.capacity() < need) {
      const size_t cap = std::min(std::max(need, 2 * l.k.capacity()),
                                  size_t(shape_.max_tokens * c * elem()));
      l.k.reserve(cap);
      l.v.reserve(cap);
    }
    l.k.resize(need);
    l.v.resize(need);
    // Keys are rotated once here, at their positions, and stored rotated.
    std::vector<float>& row = scratch_;
    row.resize(size_t(c));
    for (int64_t t = 0; t < step_n_; ++t) {
      std::copy_n(k + t * c, c, row.data());
      rope_.rotate(layer, row.data(), s.pos[size_t(s.rows + t)]);
      store(row.data(), l.k.data() + (held + t) * c * elem(), c);
    }
    store(v, l.v.data() + held * c * elem(), step_n_ * c);
  }

  void attend(int layer, const KvAttention& a) override {
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    const Seq& s = at(cur_);
    const Layer& l = s.layers[size_t(layer)];
    check_step(layer, a.n);
    KvSegment seg;
    seg.n = s.rows + step_n_ - l.first;
    seg.pos = s.pos.data() + l.first;
    seg.k_roped = true;
    seg.dtype = dtype_;
    seg.k = l.k.data();
    seg.v = l.v.data();
    seg.stride = shape_.width();
    attend_segments(shape_, rope_, layer, a, s.pos.data() + s.rows, {&seg, 1});
  }

  const RopeTable* key_rope(int layer) const override {
    return layer >= 0 && layer < shape_.n_layers ? rope_.rotating_table(layer) : nullptr;
  }

  KvView read(int layer) override {
    const Seq& s = at(cur_);
    check_layer(layer);
    const Layer& l = s.layers[size_t(layer)];
    KvView view;
    view.dtype = dtype_;
    view.k = l.k.data();
    view.v = l.v.data();
    view.row_stride = shape_.width();
    view.n_tokens = int64_t(l.k.size()) / (shape_.width() * elem());
    view.pos = s.pos.data() + l.first;
    view.k_roped = true;
    return view;
  }

  void end_step() override {
    Seq& s = at(cur_);
    s.n_tokens += step_n_;
    s.rows += step_n_;
    step_n_ = 0;
    for (int layer = 0; layer < shape_.n_layers; ++layer) drop_outside_window(s, layer);
  }

  int64_t live_bytes() const override {
    int64_t rows = 0;
    for (const Seq& s : seqs_) {
      for (const Layer& l : s.layers) rows += s.rows - l.first;
    }
    return rows * shape_.width() * 2 * elem();
  }

  // Per original value: rows dropped by eviction count as zero bits.
  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    const double held = s.n_tokens > 0 ? double(s.rows) / double(s.n_tokens) : 1.0;
    return {{dtype_ == KvDtype::F16 ? "fp16 values" : "f32 values", double(8 * elem()) * held}};
  }

  bool can_drop_rows() const override { return true; }
  void drop_rows(int seq, std::span<const int32_t> positions) override {
    Seq& s = at(seq);
    if (step_n_ != 0) fail("kv cache {}: rows can only be dropped between steps", name());
    const std::vector<uint8_t> drop = rows_to_drop({s.pos.data(), size_t(s.rows)}, positions, name());
    const int64_t rb = shape_.width() * elem();
    for (Layer& l : s.layers) {
      // Rows before `first` (a window already dropped them here) only shift its index.
      const int64_t first = l.first - std::count(drop.begin(), drop.begin() + std::ptrdiff_t(l.first), uint8_t(1));
      int64_t out = 0;
      for (int64_t r = l.first; r < s.rows; ++r) {
        if (drop[size_t(r)]) continue;
        const size_t from = size_t((r - l.first) * rb), to = size_t(out * rb);
        if (from != to) {
          std::memmove(l.k.data() + to, l.k.data() + from, size_t(rb));
          std::memmove(l.v.data() + to, l.v.data() + from, size_t(rb));
        }
        ++out;
      }
      l.k.resize(size_t(out * rb));
      l.v.resize(size_t(out * rb));
      l.first = first;
    }
    int64_t out = 0;
    for (int64_t r = 0; r < s.rows; ++r)
      if (!drop[size_t(r)]) s.pos[size_t(out++)] = s.pos[size_t(r)];
    s.rows = out;
    s.pos.resize(size_t(out));
  }

  // State: "meta" = {n_tokens}, "pos" (int32 per position), "first" (per layer, the position of
  // its first held row), "k.L" / "v.L" (the layer's held rows as stored: keys rotated).
  void save_state(int seq, KvStateOut& out) const override {
    const Seq& s = at(seq);
    if (s.rows != s.n_tokens) fail("kv cache {}: a sequence whose rows were dropped cannot be saved", name());
    meta_ = {s.n_tokens};
    first_.clear();
    for (const Layer& l : s.layers) first_.push_back(l.first);
    put_section(out, "meta", meta_);
    put_section(out, "pos", s.pos);
    put_section(out, "first", first_);
    for (int l = 0; l < shape_.n_layers; ++l) {
      put_section(out, "k." + std::to_string(l), s.layers[size_t(l)].k);
      put_section(out, "v." + std::to_string(l), s.layers[size_t(l)].v);
    }
  }

  void load_state(int seq, const KvStateIn& in) override {
    Seq& s = at(seq);
    const std::string f = name();
    std::vector<int64_t> meta, first;
    get_section(in, f, "meta", meta, 1);
    const int64_t n = meta[0];
    if (n < 0 || n > shape_.max_tokens) fail("saved {} state: {} tokens, the context holds {}", f, n, shape_.max_tokens);
    Seq t;
    get_section(in, f, "pos", t.pos, n);
    check_dense_positions(t.pos, n, f);
    get_section(in, f, "first", first, shape_.n_layers);
    t.n_tokens = t.rows = n;
    t.layers.resize(size_t(shape_.n_layers));
    const int64_t row = shape_.width() * elem();
    for (int l = 0; l < shape_.n_layers; ++l) {
      Layer& y = t.layers[size_t(l)];
      y.first = first[size_t(l)];
      const int64_t w = shape_.window_of(l);
      // A layer holds every position from `first` on; only a sliding window may have dropped
      // the ones before (and then only those no later query sees).
      if (y.first < 0 || y.first > n || (y.first > 0 && !(w > 0 && y.first <= std::max<int64_t>(0, n - (w - 1)))))
        fail("saved {} state: layer {} starts at position {} of {}", f, l, y.first, n);
      get_section(in, f, "k." + std::to_string(l), y.k, (n - y.first) * row);
      get_section(in, f, "v." + std::to_string(l), y.v, (n - y.first) * row);
    }
    s = std::move(t);
    rope_.ensure(n);
  }

  int64_t truncate(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n >= s.n_tokens) return s.n_tokens;
    n = std::max<int64_t>(n, 0);
    if (s.rows != s.n_tokens) {  // dropped rows: the prefix is no longer whole
      clear(seq);
      return 0;
    }
    // A sliding-window layer must still hold what a query at position n sees (n - W + 1 ..).
    for (int l = 0; l < shape_.n_layers; ++l) {
      const int64_t w = shape_.window_of(l);
      if (s.layers[size_t(l)].first > (w > 0 ? std::max<int64_t>(0, n - w + 1) : 0)) {
        clear(seq);
        return 0;
      }
    }
    const int64_t row = shape_.width() * elem();
    for (Layer& l : s.layers) {
      l.k.resize(size_t((n - l.first) * row));
      l.v.resize(size_t((n - l.first) * row));
    }
    s.pos.resize(size_t(n));
    s.n_tokens = s.rows = n;
    return n;
  }

 private:
  struct Layer {
    PageVector<uint8_t> k, v;  // rows first .. rows-1 of the sequence (+ the step's)
    int64_t first = 0;          // index of the first held row (> 0 once a window slid)
  };
  struct Seq {
    int64_t n_tokens = 0;      // positions consumed
    int64_t rows = 0;          // rows held (n_tokens minus dropped rows), between steps
    std::vector<int32_t> pos;  // position of every row (rows of all layers share them)
    std::vector<Layer> layers;
  };

  // A sliding-window layer forgets the rows no later query can see (positions <= T - W).
  void drop_outside_window(Seq& s, int layer) {
    const int64_t w = shape_.window_of(layer);
    if (w <= 0) return;
    Layer& l = s.layers[size_t(layer)];
    // Rows at positions <= T - W: the first of the rest is at lower_bound(T - W + 1).
    const auto end = s.pos.begin() + std::ptrdiff_t(s.rows);
    const int64_t keep_from = std::lower_bound(s.pos.begin() + std::ptrdiff_t(l.first), end,
                                               int32_t(s.n_tokens - w + 1)) - s.pos.begin();
    const int64_t dead = keep_from - l.first;
    if (dead <= 0) return;
    const size_t bytes = size_t(dead * shape_.width() * elem());
    l.k.erase(l.k.begin(), l.k.begin() + std::ptrdiff_t(bytes));
    l.v.erase(l.v.begin(), l.v.begin() + std::ptrdiff_t(bytes));
    l.first += dead;
  }

  static const KvShape& check(const KvShape& shape) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.max_tokens <= 0) {
      fail("kv cache: invalid shape (layers {}, kv heads {}, head dim {}, max tokens {})",
           shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.max_tokens);
    }
    return shape;
  }

  int64_t elem() const { return dtype_ == KvDtype::F16 ? 2 : 4; }

  Seq& at(int seq) {
    if (seq < 0 || seq >= int(seqs_.size())) fail("kv cache: no sequence {} (have {})", seq, seqs_.size());
    return seqs_[size_t(seq)];
  }
  const Seq& at(int seq) const { return const_cast<PlainCache*>(this)->at(seq); }
  void check_layer(int layer) const {
    if (layer < 0 || layer >= shape_.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape_.n_layers);
  }
  void check_step(int layer, int64_t n) const {
    check_layer(layer);
    const Seq& s = seqs_[size_t(cur_)];
    if (n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", n, step_n_);
    const Layer& l = s.layers[size_t(layer)];
    if (l.k.size() != size_t((s.rows - l.first + step_n_) * shape_.width() * elem()))
      fail("kv cache: attention on layer {} before its append in this step", layer);
  }

  void store(const float* src, uint8_t* dst, int64_t n) const {
    if (dtype_ == KvDtype::F32) {
      std::memcpy(dst, src, size_t(n) * 4);
    } else {
      floats_to_halves(src, n, reinterpret_cast<uint16_t*>(dst));  // vectors are 2-byte aligned
    }
  }

  KvShape shape_;
  KvDtype dtype_;
  KvRope rope_;
  std::vector<Seq> seqs_;
  std::vector<float> scratch_;
  mutable std::vector<int64_t> meta_, first_;  // save_state's small sections (must outlive it)
  int cur_ = 0;
  int64_t step_n_ = 0;
};

}  // namespace

std::unique_ptr<KvCache> make_plain_cache(const KvShape& shape, KvDtype dtype) {
  return std::make_unique<PlainCache>(shape, dtype);
}

}  // namespace aquakv
