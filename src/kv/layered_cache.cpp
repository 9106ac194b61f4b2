// One single-layer cache per layer (kv/layered_cache.h).
#include "aquakv/kv/layered_cache.h"

#include <algorithm>
#include <map>

#include "aquakv/util/check.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

// Reports the layer cache's weights (which calls its only layer 0) as layer `layer`.
class LayerObserver final : public KvAttentionObserver {
 public:
  LayerObserver(KvAttentionObserver* inner, int layer) : inner_(inner), layer_(layer) {}
  void on_weights(int, int64_t i, int64_t qpos, int h, std::span<const int32_t> pos,
                  std::span<const float> w) override {
    inner_->on_weights(layer_, i, qpos, h, pos, w);
  }

 private:
  KvAttentionObserver* inner_;
  int layer_;
};

// Section names of layer l's cache get the prefix "L<l>." in the saved state.
class PrefixOut final : public KvStateOut {
 public:
  PrefixOut(KvStateOut& out, std::string prefix) : out_(out), prefix_(std::move(prefix)) {}
  void put(const std::string& name, const void* data, int64_t bytes) override { out_.put(prefix_ + name, data, bytes); }

 private:
  KvStateOut& out_;
  std::string prefix_;
};
class PrefixIn final : public KvStateIn {
 public:
  PrefixIn(const KvStateIn& in, std::string prefix) : in_(in), prefix_(std::move(prefix)) {}
  int64_t size(const std::string& name) const override { return in_.size(prefix_ + name); }
  void get(const std::string& name, void* dst, int64_t bytes) const override { in_.get(prefix_ + name, dst, bytes); }

 private:
  const KvStateIn& in_;
  std::string prefix_;
};

class LayeredCache final : public KvCache {
 public:
  LayeredCache(const KvShape& shape, std::string name, std::vector<std::unique_ptr<KvCache>> layers,
               int64_t fixed, std::string state_tag)
      : shape_(shape), name_(std::move(name)), layers_(std::move(layers)), fixed_(fixed), tag_(std::move(state_tag)) {
    if (int64_t(layers_.size()) != shape_.n_layers)
      fail("kv cache {}: {} layer caches for a model of {} layers", name_, layers_.size(), shape_.n_layers);
    for (const auto& l : layers_) AQUAKV_CHECK(l && l->shape().n_layers == 1);
  }
  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return name_; }
  int add_sequence() override {
    int id = -1;
    for (auto& l : layers_) {
      const int got = l->add_sequence();
      AQUAKV_CHECK(id < 0 || got == id);
      id = got;
    }
    return id;
  }
  int n_seqs() const override { return layers_.front()->n_seqs(); }
  void clear(int seq) override {
    for (auto& l : layers_) l->clear(seq);
  }
  int64_t n_tokens(int seq) const override { return layers_.front()->n_tokens(seq); }
  void begin_step(int seq, int64_t n) override {
    for (auto& l : layers_) l->begin_step(seq, n);
  }
  void append(int layer, const float* k, const float* v) override { at(layer).append(0, k, v); }
  void attend(int layer, const KvAttention& a) override {
    if (!a.observer) return at(layer).attend(0, a);
    LayerObserver obs(a.observer, layer);
    KvAttention b = a;
    b.observer = &obs;
    at(layer).attend(0, b);
  }
  KvView read(int layer) override { return at(layer).read(0); }
  void end_step() override {
    for (auto& l : layers_) l->end_step();
  }
  int64_t live_bytes() const override {
    int64_t b = 0;
    for (const auto& l : layers_) b += l->live_bytes();
    return b;
  }
  int64_t fixed_bytes() const override {
    int64_t b = fixed_;
    for (const auto& l : layers_) b += l->fixed_bytes();
    return b;
  }
  // Every layer holds the same tokens, so the model's bits per value are the layers' mean.
  // Saved state: every layer cache's sections under "L<l>."; the format is the layers' formats
  // plus the tag (which tables the codes were made with).
  std::string state_format() const override {
    std::string f = "layered " + tag_;
    for (const auto& l : layers_) f += " | " + l->state_format();
    return f;
  }
  void save_state(int seq, KvStateOut& out) const override {
    for (size_t l = 0; l < layers_.size(); ++l) {
      PrefixOut o(out, "L" + std::to_string(l) + ".");
      layers_[l]->save_state(seq, o);
    }
  }
  void load_state(int seq, const KvStateIn& in) override {
    for (size_t l = 0; l < layers_.size(); ++l) {
      PrefixIn i(in, "L" + std::to_string(l) + ".");
      layers_[l]->load_state(seq, i);
    }
    for (const auto& l : layers_)
      if (l->n_tokens(seq) != layers_.front()->n_tokens(seq))
        fail("saved {} state: layers hold different token counts", name_);
  }
  // Every layer keeps the same prefix (they share one storage scheme); the least is taken.
  int64_t truncate(int seq, int64_t n) override {
    int64_t kept = n;
    for (auto& l : layers_) kept = std::min(kept, l->truncate(seq, n));
    for (auto& l : layers_) l->truncate(seq, kept);
    return kept;
  }

  bool can_drop_rows() const override {
    return std::all_of(layers_.begin(), layers_.end(), [](const auto& l) { return l->can_drop_rows(); });
  }
  void drop_rows(int seq, std::span<const int32_t> positions) override {
    for (auto& l : layers_) l->drop_rows(seq, positions);
  }

  std::vector<KvBitsTerm> bits_report(int seq) const override {
    std::vector<KvBitsTerm> out;
    std::map<std::string, size_t> where;
    for (const auto& l : layers_) {
      for (const auto& t : l->bits_report(seq)) {
        // A layer cache names its codes by its own layer numbers (all "layer 0"); here every
        // layer has its own codecs.
        const std::string name = t.name.rfind("codes", 0) == 0 ? "codes+scales+outliers (per-layer codecs)" : t.name;
        auto it = where.find(name);
        if (it == where.end()) {
          it = where.emplace(name, out.size()).first;
          out.push_back({name, 0.0});
        }
        out[it->second].bits_per_value += t.bits_per_value / double(layers_.size());
      }
    }
    return out;
  }

 private:
  KvCache& at(int layer) {
    AQUAKV_CHECK(layer >= 0 && layer < int(layers_.size()));
    return *layers_[size_t(layer)];
  }

  KvShape shape_;
  std::string name_;
  std::vector<std::unique_ptr<KvCache>> layers_;
  int64_t fixed_;
  std::string tag_;
};

}  // namespace

KvShape single_layer_shape(const KvShape& shape, int layer) {
  AQUAKV_CHECK(layer >= 0 && layer < shape.n_layers);
  KvShape s = shape;
  s.n_layers = 1;
  s.rope = shape.rope_of(layer);
  s.layer_rope.clear();
  s.window.clear();
  if (shape.window_of(layer) != 0) s.window = {shape.window_of(layer)};
  return s;
}

std::unique_ptr<KvCache> make_layered_cache(const KvShape& shape, std::string name,
                                            std::vector<std::unique_ptr<KvCache>> layers,
                                            int64_t fixed_bytes, std::string state_tag) {
  return std::make_unique<LayeredCache>(shape, std::move(name), std::move(layers), fixed_bytes, std::move(state_tag));
}

}  // namespace aquakv
