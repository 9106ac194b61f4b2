// KVSharer layer-sharing plans and the kvsharer cache (kv/layer_share.h).
#include "aquakv/kv/layer_share.h"

#include <algorithm>

#include <fmt/format.h>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/file_envelope.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'S', 'H', 'A', 'R'};

// Layers that store rows get compact indices 0.. in order; a shared layer maps to its source's.
std::vector<int> compact_index(const std::vector<int32_t>& source) {
  std::vector<int> map(source.size());
  int next = 0;
  for (size_t l = 0; l < source.size(); ++l) map[l] = source[l] < 0 ? next++ : map[size_t(source[l])];
  return map;
}

class LayerShareCache final : public KvCache {
 public:
  LayerShareCache(const KvShape& shape, const std::vector<int32_t>& source, std::unique_ptr<KvCache> inner,
                  std::string name)
      : shape_(shape), source_(source), map_(compact_index(source)), inner_(std::move(inner)), name_(std::move(name)),
        rope_(shape), held_(source.size()) {
    if (int64_t(source.size()) != shape.n_layers)
      fail("--kv kvsharer: the plan has {} layers, the model {}", source.size(), shape.n_layers);
    check_layer_share_plan(source, "--kv kvsharer");
    for (int l = 0; l < shape.n_layers; ++l) {
      const int s = source[size_t(l)];
      if (s < 0) continue;
      if (!layers_can_share(shape, s, l))
        fail("--kv kvsharer: layer {} cannot read layer {}'s rows: their RoPE or attention window differ", l, s);
    }
    const KvShape& in = inner_->shape();
    if (in.n_layers != shape.n_layers - n_shared() || in.n_kv_heads != shape.n_kv_heads || in.head_dim != shape.head_dim)
      fail("--kv kvsharer: the wrapped format has {} layers of {} x {}, expected {} of {} x {}", in.n_layers,
           in.n_kv_heads, in.head_dim, shape.n_layers - n_shared(), shape.n_kv_heads, shape.head_dim);
  }

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return name_; }
  int add_sequence() override { return inner_->add_sequence(); }
  int n_seqs() const override { return inner_->n_seqs(); }
  void clear(int seq) override { inner_->clear(seq); }
  int64_t n_tokens(int seq) const override { return inner_->n_tokens(seq); }
  void begin_step(int seq, int64_t n) override {
    inner_->begin_step(seq, n);
    ++step_;
    rope_.ensure(inner_->n_tokens(seq) + n);
  }
  // A shared layer's rows are not stored: its source's rows stand for them.
  void append(int layer, const float* k, const float* v) override {
    check(layer);
    if (source_[size_t(layer)] < 0) inner_->append(map_[size_t(layer)], k, v);
  }
  // A source layer attends in the wrapped format, then its rows are copied for the layers that
  // read them; a shared layer attends over that copy. (Asking the wrapped format again, out of
  // layer order, would be correct but costs AQUA-KV a rebuild of its predictor chain from
  // layer 0 each time.) The copy is scratch of the step, like the formats' decode buffers.
  void attend(int layer, const KvAttention& a) override {
    check(layer);
    const int src = source_[size_t(layer)];
    if (src < 0) {
      inner_->attend(map_[size_t(layer)], a);
      if (is_source(layer) && a.observer == nullptr) hold(layer);
      return;
    }
    Held& h = held_[size_t(src)];
    if (a.observer != nullptr || h.step != step_) return attend_reference(*this, layer, a);
    KvSegment g;
    g.n = int64_t(h.pos.size());
    g.pos = h.pos.data();
    g.k_roped = h.k_roped;
    g.dtype = KvDtype::F32;
    g.k = h.k.data();
    g.v = h.v.data();
    g.stride = shape_.width();
    attend_segments(shape_, rope_, src, a, h.pos.data() + (g.n - a.n), std::span<const KvSegment>(&g, 1));
  }
  KvView read(int layer) override {
    check(layer);
    return inner_->read(map_[size_t(layer)]);
  }
  void end_step() override { inner_->end_step(); }

  int64_t live_bytes() const override { return inner_->live_bytes(); }
  int64_t fixed_bytes() const override { return inner_->fixed_bytes() + 4 * int64_t(source_.size()); }
  // The wrapped format's terms are per value of the layers it holds: scaled to every layer's.
  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const double kept = double(shape_.n_layers - n_shared()) / double(shape_.n_layers);
    std::vector<KvBitsTerm> out;
    for (const KvBitsTerm& t : inner_->bits_report(seq)) out.push_back({t.name, t.bits_per_value * kept});
    out.push_back({fmt::format("shared layers ({} of {}, no rows)", n_shared(), shape_.n_layers), 0.0});
    return out;
  }

  std::string state_format() const override { return name_ + " | " + inner_->state_format(); }
  void save_state(int seq, KvStateOut& out) const override { inner_->save_state(seq, out); }
  void load_state(int seq, const KvStateIn& in) override { inner_->load_state(seq, in); }
  int64_t truncate(int seq, int64_t n) override { return inner_->truncate(seq, n); }
  void drop_rows(int seq, std::span<const int32_t> positions) override { inner_->drop_rows(seq, positions); }
  bool can_drop_rows() const override { return inner_->can_drop_rows(); }

 private:
  // A source layer's rows as the wrapped format reads them, for the step `step`.
  struct Held {
    uint64_t step = 0;
    std::vector<float> k, v;
    std::vector<int32_t> pos;
    bool k_roped = false;
  };
  bool is_source(int layer) const {
    for (int32_t s : source_)
      if (s == layer) return true;
    return false;
  }
  void hold(int layer) {
    const KvView view = inner_->read(map_[size_t(layer)]);
    const int64_t C = shape_.width(), n = view.n_tokens;
    Held& h = held_[size_t(layer)];
    h.k.resize(size_t(n * C));
    h.v.resize(size_t(n * C));
    for (int64_t r = 0; r < n; ++r) {
      if (view.dtype == KvDtype::F16) {
        halves_to_floats(static_cast<const uint16_t*>(view.k) + r * view.row_stride, C, h.k.data() + r * C);
        halves_to_floats(static_cast<const uint16_t*>(view.v) + r * view.row_stride, C, h.v.data() + r * C);
      } else {
        std::copy_n(static_cast<const float*>(view.k) + r * view.row_stride, C, h.k.data() + r * C);
        std::copy_n(static_cast<const float*>(view.v) + r * view.row_stride, C, h.v.data() + r * C);
      }
    }
    h.pos.assign(view.pos, view.pos + n);
    h.k_roped = view.k_roped;
    h.step = step_;
  }
  int n_shared() const {
    int n = 0;
    for (int32_t s : source_) n += s >= 0;
    return n;
  }
  void check(int layer) const {
    if (layer < 0 || layer >= shape_.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape_.n_layers);
  }

  KvShape shape_;
  std::vector<int32_t> source_;
  std::vector<int> map_;
  std::unique_ptr<KvCache> inner_;
  std::string name_;
  KvRope rope_;
  std::vector<Held> held_;  // per layer (sources only)
  uint64_t step_ = 0;
};

}  // namespace

bool layers_can_share(const KvShape& shape, int a, int b) {
  return same_rope(shape.rope_of(a), shape.rope_of(b)) && shape.window_of(a) == shape.window_of(b);
}

int LayerSharePlan::n_shared() const {
  int n = 0;
  for (int32_t s : source) n += s >= 0;
  return n;
}

void check_layer_share_plan(const std::vector<int32_t>& source, const std::string& what) {
  for (size_t l = 0; l < source.size(); ++l) {
    const int32_t s = source[l];
    if (s < -1 || s >= int32_t(l))
      fail("{}: layer {} reads layer {}: a source must be an earlier layer (or -1)", what, l, s);
    if (s >= 0 && source[size_t(s)] >= 0)
      fail("{}: layer {} reads layer {}, which is itself shared (sources store their rows)", what, l, s);
  }
}

void save_layer_share_plan(LayerSharePlan& plan, const std::string& path) {
  const ModelFingerprint& m = plan.model;
  if (int64_t(plan.source.size()) != m.n_layers)
    fail("layer-share plan {}: {} sources for {} layers", path, plan.source.size(), m.n_layers);
  check_layer_share_plan(plan.source, "layer-share plan " + path);
  ByteWriter w;
  const size_t length_at = begin_envelope(w, kMagic, kLayerSharePlanVersion);
  write_fingerprint(w, m);
  for (int32_t s : plan.source) w.put<int32_t>(s);
  w.str(plan.notes);
  plan.checksum = end_envelope(w, length_at);
  write_file_atomic(path, w.bytes(), "layer-share plan");
}

LayerSharePlan parse_layer_share_plan(std::span<const uint8_t> bytes, const std::string& name) {
  ByteReader r(bytes, "layer-share plan " + name);
  LayerSharePlan p;
  p.checksum = check_envelope(r, bytes, kMagic, kLayerSharePlanVersion, "layer-share plan " + name, "layer-share plan");
  p.model = read_fingerprint(r, "layer-share plan " + name);
  for (int64_t l = 0; l < p.model.n_layers; ++l) p.source.push_back(r.get<int32_t>("source"));
  p.notes = r.str("notes");
  if (r.remaining() != 8) fail("layer-share plan {}: {} unexpected bytes after the notes", name, r.remaining() - 8);
  check_layer_share_plan(p.source, "layer-share plan " + name);
  return p;
}

LayerSharePlan load_layer_share_plan(const std::string& path) {
  const std::string bytes = read_file(path, "layer-share plan", ReadKind::kData);
  return parse_layer_share_plan(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), path);
}

KvShape compact_share_shape(const KvShape& shape, const std::vector<int32_t>& source, uint64_t plan_checksum) {
  KvShape c = shape;
  c.layer_rope.clear();
  c.window.clear();
  c.n_layers = 0;
  for (int l = 0; l < shape.n_layers; ++l) {
    if (source[size_t(l)] >= 0) continue;
    ++c.n_layers;
    if (!shape.layer_rope.empty()) c.layer_rope.push_back(shape.layer_rope[size_t(l)]);
    if (!shape.window.empty()) c.window.push_back(shape.window[size_t(l)]);
  }
  if (shape.model_hash != 0) c.model_hash = fnv1a64(&plan_checksum, 8, shape.model_hash);
  return c;
}

std::unique_ptr<KvCache> make_layer_share_cache(const KvShape& shape, const std::vector<int32_t>& source,
                                                std::unique_ptr<KvCache> inner, const std::string& name) {
  return std::make_unique<LayerShareCache>(shape, source, std::move(inner), name);
}

std::unique_ptr<KvCache> make_kvsharer_from_spec(const std::string& args, const KvShape& shape) {
  const size_t plus = args.find('+');
  const std::string path = args.substr(0, plus);
  const std::string format = plus == std::string::npos ? "fp16" : args.substr(plus + 1);
  if (path.empty()) fail("--kv kvsharer: needs a plan file: kvsharer:PLAN[+FORMAT] (make one with aquakv calibrate --method kvsharer)");
  if (format.empty()) fail("--kv kvsharer: nothing after '+' (kvsharer:PLAN[+FORMAT])");
  const LayerSharePlan p = load_layer_share_plan(path);
  check_fingerprint(p.model, shape, "layer-share plan " + path);
  auto inner = make_cache(format, compact_share_shape(shape, p.source, p.checksum));
  const std::string name = fmt::format("kvsharer:{}+{}", path, inner->name());
  return make_layer_share_cache(shape, p.source, std::move(inner), name);
}

}  // namespace aquakv
