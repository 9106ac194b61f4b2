// The LoRC cache (kv/lorc_cache.h).
#include "aquakv/kv/lorc_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/file_envelope.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/kv/sink_buffer_stack.h"
#include "aquakv/ops/affine_rows.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/error.h"
#include "aquakv/util/page_vector.h"

namespace aquakv {
namespace {

// One stream's maps: latent = x P + p (P = B, p = -o B), row = latent R + o (R = B^T).
struct StreamMaps {
  int64_t rank = 0;
  std::vector<float> proj, proj_bias, recon, offset;
};

StreamMaps make_maps(const LorcStream& s, int64_t C) {
  StreamMaps m;
  m.rank = s.rank;
  const int64_t r = s.rank;
  m.proj = s.basis;
  m.offset = s.offset;
  m.proj_bias.assign(size_t(r), 0.0f);
  m.recon.resize(size_t(r * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < r; ++j) {
      m.recon[size_t(j * C + c)] = s.basis[size_t(c * r + j)];
      m.proj_bias[size_t(j)] -= s.offset[size_t(c)] * s.basis[size_t(c * r + j)];
    }
  return m;
}

class LorcCache final : public KvCache {
 public:
  LorcCache(const KvShape& shape, LorcPlan plan, int64_t sinks, std::string name)
      : shape_(shape), name_(std::move(name)), rope_(shape), sinks_(sinks) {
    const int64_t C = shape.width();
    for (const auto& l : plan.layers) maps_.push_back({make_maps(l[0], C), make_maps(l[1], C)});
    checksum_ = plan.checksum;
    for (const auto& l : maps_) fixed_ += 4 * int64_t(l[0].proj.size() + l[0].recon.size() + l[1].proj.size() + l[1].recon.size());
  }

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return name_; }
  int add_sequence() override {
    seqs_.emplace_back();
    seqs_.back().layers.resize(size_t(shape_.n_layers));
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override {
    Seq& s = at(seq);
    s = Seq{};
    s.layers.resize(size_t(shape_.n_layers));
  }
  int64_t n_tokens(int seq) const override { return at(seq).n_tokens; }

  void begin_step(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || s.n_tokens + n > shape_.max_tokens)
      fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq, s.n_tokens, n, shape_.max_tokens);
    cur_ = seq;
    step_n_ = n;
    step_sinks_ = std::clamp<int64_t>(sinks_ - s.n_tokens, 0, n);
    s.pos.resize(size_t(s.rows + n));  // rows may be fewer than positions (dropped rows)
    for (int64_t i = 0; i < n; ++i) s.pos[size_t(s.rows + i)] = int32_t(s.n_tokens + i);
    rope_.ensure(s.n_tokens + n);
  }

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    const auto& m = maps_[size_t(layer)];
    const int64_t C = shape_.width(), ns = step_sinks_;
    if (int64_t(l.k.size()) != (s.rows - s.n_sinks) * m[0].rank || int64_t(l.sink_k.size()) != s.n_sinks * C)
      fail("kv cache: append to layer {} twice in one step", layer);
    // The step's first ns rows are sinks (positions < p): kept exact, before RoPE.
    const size_t o = l.sink_k.size();
    l.sink_k.resize(o + size_t(ns * C));
    l.sink_v.resize(o + size_t(ns * C));
    floats_to_halves(k, ns * C, l.sink_k.data() + o);
    floats_to_halves(v, ns * C, l.sink_v.data() + o);
    add_latents(m[0], k + ns * C, step_n_ - ns, l.k);
    add_latents(m[1], v + ns * C, step_n_ - ns, l.v);
  }

  void attend(int layer, const KvAttention& a) override {
    Seq& s = at(cur_);
    const Layer& l = layer_of(s, layer);
    check_appended(s, l, layer);
    if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    const int64_t C = shape_.width(), ns = s.n_sinks + step_sinks_, T = latent_rows(s);
    att_k_.resize(size_t(T * C));
    att_v_.resize(size_t(T * C));
    KvSegment sk;
    sk.n = ns;
    sk.pos = s.pos.data();
    sk.dtype = KvDtype::F16;
    sk.k = l.sink_k.data();
    sk.v = l.sink_v.data();
    sk.stride = C;
    KvSegment g;
    g.n = T;
    g.pos = s.pos.data() + ns;
    g.k_roped = false;
    g.dtype = KvDtype::F32;
    g.k = att_k_.data();
    g.v = att_v_.data();
    g.stride = C;
    g.produce = [this, &l, layer](int64_t r0, int64_t r1) { reconstruct(l, layer, r0, r1, att_k_.data(), att_v_.data()); };
    const KvSegment segs[2] = {sk, g};
    attend_segments(shape_, rope_, layer, a, s.pos.data() + s.rows, std::span<const KvSegment>(segs + (ns == 0 ? 1 : 0), ns == 0 ? 1 : 2));
  }

  KvView read(int layer) override {
    Seq& s = at(cur_);
    const Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width(), ns = int64_t(l.sink_k.size()) / C, nl = int64_t(l.k.size()) / maps_[size_t(layer)][0].rank;
    const int64_t T = ns + nl;
    view_k_.resize(size_t(T * C));
    view_v_.resize(size_t(T * C));
    halves_to_floats(l.sink_k.data(), ns * C, view_k_.data());
    halves_to_floats(l.sink_v.data(), ns * C, view_v_.data());
    reconstruct(l, layer, 0, nl, view_k_.data() + ns * C, view_v_.data() + ns * C);
    KvView view;
    view.dtype = KvDtype::F32;
    view.k = view_k_.data();
    view.v = view_v_.data();
    view.row_stride = C;
    view.n_tokens = T;
    view.pos = s.pos.data();
    view.k_roped = false;
    return view;
  }

  void end_step() override {
    Seq& s = at(cur_);
    for (int layer = 0; layer < shape_.n_layers; ++layer) check_appended(s, s.layers[size_t(layer)], layer);
    s.rows += step_n_;
    s.n_sinks += step_sinks_;
    s.n_tokens += step_n_;
    step_n_ = step_sinks_ = 0;
  }
  const RopeTable* key_rope(int layer) const override { return rope_.rotating_table(layer); }

  int64_t live_bytes() const override {
    int64_t b = 0;
    for (const Seq& s : seqs_)
      for (const Layer& l : s.layers) b += 2 * int64_t(l.k.size() + l.v.size() + l.sink_k.size() + l.sink_v.size());
    return b;
  }
  int64_t fixed_bytes() const override { return fixed_; }
  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    int64_t kb = 0, vb = 0, sb = 0;
    for (const Layer& l : s.layers) {
      kb += 2 * int64_t(l.k.size());
      vb += 2 * int64_t(l.v.size());
      sb += 2 * int64_t(l.sink_k.size() + l.sink_v.size());
    }
    const double values = double(s.n_tokens) * double(shape_.n_layers) * 2.0 * double(shape_.width());
    auto bits = [&](int64_t b) { return values > 0 ? 8.0 * double(b) / values : 0.0; };
    return {{"key latents (fp16)", bits(kb)}, {"value latents (fp16)", bits(vb)}, {"exact sinks (fp16)", bits(sb)}};
  }

  std::string state_format() const override { return fmt::format("lorc:{:016x},p={}", checksum_, sinks_); }
  void save_state(int seq, KvStateOut& out) const override {
    const Seq& s = at(seq);
    if (s.rows != s.n_tokens) fail("kv cache {}: a sequence that dropped rows cannot be saved", name_);
    put_section(out, "pos", s.pos);
    for (size_t l = 0; l < s.layers.size(); ++l) {
      put_section(out, fmt::format("sk.{}", l), s.layers[l].sink_k);
      put_section(out, fmt::format("sv.{}", l), s.layers[l].sink_v);
      put_section(out, fmt::format("k.{}", l), s.layers[l].k);
      put_section(out, fmt::format("v.{}", l), s.layers[l].v);
    }
  }
  void load_state(int seq, const KvStateIn& in) override {
    Seq t;
    t.layers.resize(size_t(shape_.n_layers));
    get_section(in, name_, "pos", t.pos);
    const int64_t n = int64_t(t.pos.size());
    if (n > shape_.max_tokens) fail("saved {} state: {} tokens exceed the context of {}", name_, n, shape_.max_tokens);
    check_dense_positions(t.pos, n, name_);
    const int64_t ns = std::min(n, sinks_), C = shape_.width();
    for (size_t l = 0; l < t.layers.size(); ++l) {
      get_section(in, name_, fmt::format("sk.{}", l), t.layers[l].sink_k, ns * C);
      get_section(in, name_, fmt::format("sv.{}", l), t.layers[l].sink_v, ns * C);
      get_section(in, name_, fmt::format("k.{}", l), t.layers[l].k, (n - ns) * maps_[l][0].rank);
      get_section(in, name_, fmt::format("v.{}", l), t.layers[l].v, (n - ns) * maps_[l][1].rank);
    }
    t.rows = t.n_tokens = n;
    t.n_sinks = ns;
    at(seq) = std::move(t);
  }
  int64_t truncate(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || n > s.n_tokens) fail("kv cache: truncate to {} of {} tokens", n, s.n_tokens);
    if (s.rows != s.n_tokens) {  // dropped rows: the prefix has holes
      clear(seq);
      return 0;
    }
    s.pos.resize(size_t(n));
    s.n_sinks = std::min(s.n_sinks, n);
    const int64_t C = shape_.width();
    for (size_t l = 0; l < s.layers.size(); ++l) {
      s.layers[l].sink_k.resize(size_t(s.n_sinks * C));
      s.layers[l].sink_v.resize(size_t(s.n_sinks * C));
      s.layers[l].k.resize(size_t((n - s.n_sinks) * maps_[l][0].rank));
      s.layers[l].v.resize(size_t((n - s.n_sinks) * maps_[l][1].rank));
    }
    s.rows = s.n_tokens = n;
    return n;
  }

  bool can_drop_rows() const override { return true; }
  void drop_rows(int seq, std::span<const int32_t> positions) override {
    Seq& s = at(seq);
    if (step_n_ != 0) fail("kv cache {}: rows can only be dropped between steps", name_);
    const std::vector<uint8_t> drop = rows_to_drop({s.pos.data(), size_t(s.rows)}, positions, name_);
    const std::vector<uint8_t> dsink(drop.begin(), drop.begin() + std::ptrdiff_t(s.n_sinks));
    const std::vector<uint8_t> dlat(drop.begin() + std::ptrdiff_t(s.n_sinks), drop.end());
    const int64_t C = shape_.width();
    for (size_t l = 0; l < s.layers.size(); ++l) {
      compact(s.layers[l].sink_k, dsink, C);
      compact(s.layers[l].sink_v, dsink, C);
      compact(s.layers[l].k, dlat, maps_[l][0].rank);
      compact(s.layers[l].v, dlat, maps_[l][1].rank);
    }
    s.n_sinks -= std::count(dsink.begin(), dsink.end(), uint8_t(1));
    int64_t out = 0;
    for (int64_t r = 0; r < s.rows; ++r)
      if (!drop[size_t(r)]) s.pos[size_t(out++)] = s.pos[size_t(r)];
    s.pos.resize(size_t(out));
    s.rows = out;
  }

 private:
  struct Layer {
    PageVector<uint16_t> sink_k, sink_v;  // (n_sinks, C) exact rows, keys before RoPE
    PageVector<uint16_t> k, v;  // (rows - n_sinks, r_k) / (.., r_v) fp16 latents
  };
  // Rows held: [n_sinks exact sinks] [rows - n_sinks latents], positions in pos.
  struct Seq {
    int64_t n_tokens = 0, rows = 0, n_sinks = 0;
    std::vector<int32_t> pos;
    std::vector<Layer> layers;
  };

  Seq& at(int seq) { return sequence_at(seqs_, seq); }
  const Seq& at(int seq) const { return const_cast<LorcCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    check_layer(layer, shape_);
    return s.layers[size_t(layer)];
  }
  // Latent rows held during the step (this step's included).
  int64_t latent_rows(const Seq& s) const { return s.rows - s.n_sinks + step_n_ - step_sinks_; }
  void check_appended(const Seq& s, const Layer& l, int layer) const {
    if (int64_t(l.k.size()) != latent_rows(s) * maps_[size_t(layer)][0].rank)
      fail("kv cache: layer {} was not appended this step", layer);
  }

  // The step's rows projected on the stream's basis, appended as fp16 latents.
  void add_latents(const StreamMaps& m, const float* x, int64_t n, PageVector<uint16_t>& dst) {
    const int64_t C = shape_.width();
    std::vector<float>& lat = scratch_;
    lat.resize(size_t(n * m.rank));
    const AffineInput in{x, C, C};
    affine_rows(n, &in, 1, m.proj.data(), m.rank, m.proj_bias.data(), lat.data(), m.rank);
    const size_t o = dst.size();
    dst.resize(o + size_t(n * m.rank));
    floats_to_halves(lat.data(), n * m.rank, dst.data() + o);
  }

  // Rows [r0, r1) of layer `layer` rebuilt into k / v (rows of C, at their row index). Threads:
  // each call uses its own scratch; calls on disjoint ranges may run at once.
  void reconstruct(const Layer& l, int layer, int64_t r0, int64_t r1, float* k, float* v) const {
    const int64_t C = shape_.width(), n = r1 - r0;
    const auto& m = maps_[size_t(layer)];
    thread_local std::vector<float> lat;
    for (int s = 0; s < 2; ++s) {
      const StreamMaps& sm = m[size_t(s)];
      const uint16_t* src = (s == 0 ? l.k.data() : l.v.data()) + r0 * sm.rank;
      lat.resize(size_t(n * sm.rank));
      halves_to_floats(src, n * sm.rank, lat.data());
      const AffineInput in{lat.data(), sm.rank, sm.rank};
      affine_rows(n, &in, 1, sm.recon.data(), C, sm.offset.data(), (s == 0 ? k : v) + r0 * C, C);
    }
  }

  static void compact(PageVector<uint16_t>& x, const std::vector<uint8_t>& drop, int64_t width) {
    int64_t out = 0;
    for (size_t r = 0; r < drop.size(); ++r) {
      if (drop[r]) continue;
      if (int64_t(r) != out)
        std::memmove(x.data() + out * width, x.data() + int64_t(r) * width, size_t(width) * sizeof(uint16_t));
      ++out;
    }
    x.resize(size_t(out * width));
  }

  KvShape shape_;
  std::string name_;
  KvRope rope_;
  std::vector<std::array<StreamMaps, 2>> maps_;
  int64_t sinks_ = 0;
  uint64_t checksum_ = 0;
  int64_t fixed_ = 0;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0, step_sinks_ = 0;
  std::vector<float> scratch_, att_k_, att_v_, view_k_, view_v_;
};

}  // namespace

std::unique_ptr<KvCache> make_lorc_cache(const KvShape& shape, LorcPlan plan, int64_t sinks, const std::string& name) {
  check_shape(shape, "lorc");
  check_lorc_plan(plan, "--kv " + name);
  check_fingerprint(plan.model, shape, "--kv " + name);
  if (sinks < 0) fail("--kv {}: p must be >= 0, got {}", name, sinks);
  return std::make_unique<LorcCache>(shape, std::move(plan), sinks, name);
}

std::unique_ptr<KvCache> make_lorc_from_spec(const std::string& args, const KvShape& shape) {
  int64_t sinks = 4;
  const std::string path = parse_spec_options(args, "lorc", "lorc:PLAN[,p=N]", [&](const std::string& key, const std::string& val) {
    if (key == "p") sinks = parse_spec_count("lorc", "p=", val);
    else fail("--kv lorc: unknown option '{}={}' (known: p=)", key, val);
  });
  if (path.empty()) fail("--kv lorc: needs a plan file: lorc:PLAN[,p=N] (make one with aquakv calibrate --method lorc)");
  return make_lorc_cache(shape, load_lorc_plan(path), sinks, fmt::format("lorc:{},p={}", path, sinks));
}

}  // namespace aquakv
