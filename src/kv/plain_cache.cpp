// The plain KV cache (kv/kv_cache.h): keys and values stored as 16-bit or 32-bit floats, one
// growing buffer per (sequence, layer, K|V).
#include <algorithm>
#include <cstring>
#include <vector>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

class PlainCache final : public KvCache {
 public:
  PlainCache(const KvShape& shape, KvDtype dtype) : shape_(shape), dtype_(dtype) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.max_tokens <= 0) {
      fail("kv cache: invalid shape (layers {}, kv heads {}, head dim {}, max tokens {})",
           shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.max_tokens);
    }
  }

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
    s.n_tokens = 0;
    for (auto& l : s.layers) { l.k.clear(); l.k.shrink_to_fit(); l.v.clear(); l.v.shrink_to_fit(); }
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
  }

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    Layer& l = s.layers[size_t(layer)];
    const int64_t c = shape_.width();
    const size_t need = size_t((s.n_tokens + step_n_) * c * elem());
    if (l.k.capacity() < need) {
      const size_t cap = std::min(std::max(need, 2 * l.k.capacity()),
                                  size_t(shape_.max_tokens * c * elem()));
      l.k.reserve(cap);
      l.v.reserve(cap);
    }
    l.k.resize(need);
    l.v.resize(need);
    store(k, l.k.data() + s.n_tokens * c * elem(), step_n_ * c);
    store(v, l.v.data() + s.n_tokens * c * elem(), step_n_ * c);
  }

  KvView read(int layer) override {
    const Seq& s = at(cur_);
    const Layer& l = s.layers[size_t(layer)];
    KvView view;
    view.dtype = dtype_;
    view.k = l.k.data();
    view.v = l.v.data();
    view.row_stride = shape_.width();
    view.n_tokens = s.n_tokens + step_n_;
    return view;
  }

  void end_step() override {
    at(cur_).n_tokens += step_n_;
    step_n_ = 0;
  }

  int64_t live_bytes() const override {
    int64_t total = 0;
    for (const Seq& s : seqs_) total += s.n_tokens * shape_.width() * 2 * shape_.n_layers * elem();
    return total;
  }

  std::vector<KvBitsTerm> bits_report(int seq) const override {
    at(seq);
    return {{dtype_ == KvDtype::F16 ? "fp16 values" : "f32 values", double(8 * elem())}};
  }

 private:
  struct Layer {
    std::vector<uint8_t> k, v;
  };
  struct Seq {
    int64_t n_tokens = 0;
    std::vector<Layer> layers;
  };

  int64_t elem() const { return dtype_ == KvDtype::F16 ? 2 : 4; }

  Seq& at(int seq) {
    if (seq < 0 || seq >= int(seqs_.size())) fail("kv cache: no sequence {} (have {})", seq, seqs_.size());
    return seqs_[size_t(seq)];
  }
  const Seq& at(int seq) const { return const_cast<PlainCache*>(this)->at(seq); }

  void store(const float* src, uint8_t* dst, int64_t n) const {
    if (dtype_ == KvDtype::F32) {
      std::memcpy(dst, src, size_t(n) * 4);
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = fp32_to_fp16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  }

  KvShape shape_;
  KvDtype dtype_;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0;
};

}  // namespace

std::unique_ptr<KvCache> make_plain_cache(const KvShape& shape, KvDtype dtype) {
  return std::make_unique<PlainCache>(shape, dtype);
}

}  // namespace aquakv
