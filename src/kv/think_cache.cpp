// ThinK key-channel pruning (kv/think_cache.h).
#include "aquakv/kv/think_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "aquakv/kv/sink_buffer_stack.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

constexpr const char* kUsage = "think:PRUNE[,p=N][,b=N][,k=CODEC][,v=CODEC]";

class ThinkCache final : public KvCache {
 public:
  ThinkCache(const KvShape& shape, const ThinkOptions& opt) : shape_(shape), opt_(opt), stack_(shape, opt.sinks) {
    check_shape(shape, "think");
    if (!(opt.prune >= 0.0 && opt.prune < 1.0)) fail("--kv think: prune ratio must be in [0, 1), got {}", opt.prune);
    if (opt.buffer < 1) fail("--kv think: b must be >= 1, got {}", opt.buffer);
    if (opt.sinks < 0) fail("--kv think: p must be >= 0, got {}", opt.sinks);
    if (shape.head_dim > 256) fail("kv cache think: head dim {} above 256 (channel lists are bytes)", shape.head_dim);
    kept_ = think_kept_channels(opt, shape.head_dim);
    if (kept_ < 1) fail("--kv think: prune {} leaves no channel of a head of {}", opt.prune, shape.head_dim);
    const int64_t C = shape.width();
    kcodec_ = make_codec(opt.key_codec, int64_t(shape.n_kv_heads) * kept_, KvStream::kKey);
    vcodec_ = make_codec(opt.value_codec, C, KvStream::kValue);
    block_ = std::lcm(kcodec_->block_rows(), vcodec_->block_rows());
    name_ = fmt::format("think:{:g},p={},b={},k={},v={}", opt.prune, opt.sinks, opt.buffer, kcodec_->spec(), vcodec_->spec());
  }

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return name_; }
  int add_sequence() override {
    seqs_.emplace_back();
    reset(seqs_.back());
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override { reset(at(seq)); }
  int64_t n_tokens(int seq) const override { return at(seq).n_tokens; }

  void begin_step(int seq, int64_t n) override { stack_.begin(at(seq), seq, n); }

  // Keys are rotated here and stored rotated (the channel scores are those attention sees).
  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(stack_.cur());
    stack_.append(layer_of(s, layer), s, layer, k, v, /*rotate=*/true);
  }

  void attend(int layer, const KvAttention& a) override {
    Seq& s = at(stack_.cur());
    Layer& l = layer_of(s, layer);
    if (a.n != stack_.step_n()) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, stack_.step_n());
    if (a.n_heads <= 0 || a.n_heads % shape_.n_kv_heads != 0)
      fail("attention: {} query heads do not group over {} KV heads", a.n_heads, shape_.n_kv_heads);
    observe(l, a);
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    // The pruned chunks decoded to full f32 rows (dropped channels zero), attended as exact rows.
    stack_.attend(layer, a, s, l, /*k_roped=*/true, decoder(l));
  }

  KvView read(int layer) override {
    Seq& s = at(stack_.cur());
    const Layer& l = layer_of(s, layer);
    return stack_.read(s, l, /*k_roped=*/true, decoder(l));
  }

  void end_step() override {
    Seq& s = at(stack_.cur());
    stack_.end(s);
    if (s.n_buf >= opt_.buffer) {
      const int64_t n = s.n_buf - s.n_buf % block_;
      if (n > 0) {
        for (int l = 0; l < shape_.n_layers; ++l) prune_chunk(s.layers[size_t(l)], n);
        s.n_buf -= n;
        s.n_coded += n;
      }
    }
  }

  int64_t live_bytes() const override {
    int64_t b = 0;
    for (const Seq& s : seqs_) {
      const Bytes x = bytes(s);
      b += x.keys + x.values + x.lists + x.sinks + x.buffer + x.window;
    }
    return b;
  }

  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    auto bits = [&](int64_t b) { return bits_per_value(b, s.n_tokens, shape_); };
    const Bytes x = bytes(s);
    return {{"key codes (kept channels)", bits(x.keys)},
            {"value codes", bits(x.values)},
            {"kept-channel lists", bits(x.lists)},
            {"exact sinks (fp16)", bits(x.sinks)},
            {"exact buffer (fp16)", bits(x.buffer)},
            {"query window statistics", bits(x.window)}};
  }

 private:
  struct Chunk {
    int64_t n = 0;
    std::vector<uint8_t> kept;       // (n_kv_heads, kept) channel indices, ascending per head
    std::vector<uint8_t> kcodes, vcodes;
  };
  struct Layer : StackLayer {  // exact rows fp16, keys rotated
    std::vector<Chunk> chunks;
    std::vector<float> qsq;  // (C) sum of q^2 over the window's queries of each KV head's group
  };
  struct Seq : StackSeq {
    std::vector<Layer> layers;
  };
  struct Bytes {
    int64_t keys = 0, values = 0, lists = 0, sinks = 0, buffer = 0, window = 0;
  };

  Seq& at(int seq) { return sequence_at(seqs_, seq); }
  const Seq& at(int seq) const { return const_cast<ThinkCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    check_layer(layer, shape_);
    return s.layers[size_t(layer)];
  }
  void reset(Seq& s) const {
    s = Seq{};
    s.layers.resize(size_t(shape_.n_layers));
    for (Layer& l : s.layers) l.qsq.assign(size_t(shape_.width()), 0.0f);
  }
  // Decodes every chunk of the layer, in order.
  StackDecoder decoder(const Layer& l) const {
    return [this, &l](float* k, float* v) {
      const int64_t C = shape_.width();
      int64_t row0 = 0;
      for (const Chunk& c : l.chunks) {
        decode_chunk(c, 0, c.n, k + row0 * C, v + row0 * C);
        row0 += c.n;
      }
    };
  }

  Bytes bytes(const Seq& s) const {
    Bytes x;
    for (const Layer& l : s.layers) {
      for (const Chunk& c : l.chunks) {
        x.keys += int64_t(c.kcodes.size());
        x.values += int64_t(c.vcodes.size());
        x.lists += int64_t(c.kept.size());
      }
      x.sinks += l.sink_bytes();
      x.buffer += l.buffer_bytes();
      x.window += 4 * int64_t(l.qsq.size());
    }
    return x;
  }

  // The window statistic: q^2 of every query, summed into its KV head's channels.
  void observe(Layer& l, const KvAttention& a) {
    const int hd = shape_.head_dim, group = a.n_heads / shape_.n_kv_heads;
    for (int64_t i = 0; i < a.n; ++i)
      for (int h = 0; h < a.n_heads; ++h) {
        const float* q = a.q + (i * a.n_heads + h) * hd;
        float* acc = l.qsq.data() + (h / group) * hd;
        for (int c = 0; c < hd; ++c) acc[c] += q[c] * q[c];
      }
  }

  // The first n buffered rows of layer l become a chunk: channels chosen by the ThinK score,
  // kept key channels and whole values coded; the window restarts.
  void prune_chunk(Layer& l, int64_t n) {
    const int64_t C = shape_.width();
    const int H = shape_.n_kv_heads, hd = shape_.head_dim;
    std::vector<float> k(size_t(n * C)), v(size_t(n * C)), kk(size_t(n * H * kept_));
    halves_to_floats(l.buf_k.data(), n * C, k.data());
    halves_to_floats(l.buf_v.data(), n * C, v.data());
    Chunk c;
    c.n = n;
    c.kept.resize(size_t(H * kept_));
    std::vector<double> ksq(size_t(C), 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < C; ++j) ksq[size_t(j)] += double(k[size_t(r * C + j)]) * double(k[size_t(r * C + j)]);
    std::vector<int> idx(static_cast<size_t>(hd));
    std::vector<double> score(static_cast<size_t>(hd));
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < hd; ++i)
        score[size_t(i)] = std::sqrt(double(l.qsq[size_t(h * hd + i)])) * std::sqrt(ksq[size_t(h * hd + i)]);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return score[size_t(a)] > score[size_t(b)]; });
      std::sort(idx.begin(), idx.begin() + kept_);
      for (int j = 0; j < kept_; ++j) c.kept[size_t(h * kept_ + j)] = uint8_t(idx[size_t(j)]);
    }
    for (int64_t r = 0; r < n; ++r)
      for (int h = 0; h < H; ++h)
        for (int j = 0; j < kept_; ++j)
          kk[size_t((r * H + h) * kept_ + j)] = k[size_t(r * C + h * hd + c.kept[size_t(h * kept_ + j)])];
    c.kcodes.resize(size_t(kcodec_->encoded_bytes(n)));
    c.vcodes.resize(size_t(vcodec_->encoded_bytes(n)));
    kcodec_->encode(kk.data(), n, c.kcodes.data());
    vcodec_->encode(v.data(), n, c.vcodes.data());
    l.chunks.push_back(std::move(c));
    l.pop_buffer(n, C);
    std::fill(l.qsq.begin(), l.qsq.end(), 0.0f);
  }

  // Rows [r0, r1) of a chunk as full rows: dropped key channels are zero. Thread-safe.
  void decode_chunk(const Chunk& c, int64_t r0, int64_t r1, float* k, float* v) const {
    const int64_t C = shape_.width(), n = r1 - r0;
    const int H = shape_.n_kv_heads, hd = shape_.head_dim;
    std::vector<float> kk(size_t(n * H * kept_));
    kcodec_->decode(c.kcodes.data() + kcodec_->encoded_bytes(r0), n, kk.data());
    vcodec_->decode(c.vcodes.data() + vcodec_->encoded_bytes(r0), n, v);
    std::fill_n(k, n * C, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int h = 0; h < H; ++h)
        for (int j = 0; j < kept_; ++j)
          k[r * C + h * hd + c.kept[size_t(h * kept_ + j)]] = kk[size_t((r * H + h) * kept_ + j)];
  }

  KvShape shape_;
  ThinkOptions opt_;
  SinkBufferStack stack_;
  int kept_ = 0;
  std::unique_ptr<Codec> kcodec_, vcodec_;
  int64_t block_ = 1;
  std::string name_;
  std::vector<Seq> seqs_;
};

}  // namespace

int think_kept_channels(const ThinkOptions& opt, int head_dim) {
  return head_dim - int(std::floor(opt.prune * double(head_dim) + 0.5));
}

std::unique_ptr<KvCache> make_think_cache(const KvShape& shape, const ThinkOptions& opt) {
  return std::make_unique<ThinkCache>(shape, opt);
}

std::unique_ptr<KvCache> make_think_from_spec(const std::string& args, const KvShape& shape) {
  ThinkOptions o;
  const std::string head = parse_spec_options(args, "think", kUsage, [&](const std::string& key, const std::string& val) {
    if (key == "p") o.sinks = parse_spec_count("think", "p=", val);
    else if (key == "b") o.buffer = parse_spec_count("think", "b=", val);
    else if (key == "k") o.key_codec = val;
    else if (key == "v") o.value_codec = val;
    else fail("--kv think: unknown option '{}={}' (known: p=, b=, k=, v=)", key, val);
  });
  double x = 0.0;
  const auto r = std::from_chars(head.data(), head.data() + head.size(), x);
  if (head.empty() || r.ec != std::errc() || r.ptr != head.data() + head.size() || !(x >= 0.0 && x < 1.0))
    fail("--kv think: prune ratio must be a number in [0, 1), got '{}' ({})", head, kUsage);
  o.prune = x;
  return make_think_cache(shape, o);
}

}  // namespace aquakv
