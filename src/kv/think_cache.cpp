// ThinK key-channel pruning (kv/think_cache.h).
#include "aquakv/kv/think_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "aquakv/kv/attend.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/quant/codec.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

constexpr const char* kUsage = "think:PRUNE[,p=N][,b=N][,k=CODEC][,v=CODEC]";

class ThinkCache final : public KvCache {
 public:
  ThinkCache(const KvShape& shape, const ThinkOptions& opt) : shape_(shape), opt_(opt), rope_(shape) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.max_tokens <= 0)
      fail("kv cache think: invalid shape (layers {}, kv heads {}, head dim {})", shape.n_layers, shape.n_kv_heads, shape.head_dim);
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
    Seq& s = seqs_.back();
    s.layers.resize(size_t(shape_.n_layers));
    for (Layer& l : s.layers) l.qsq.assign(size_t(shape_.width()), 0.0f);
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override {
    Seq& s = at(seq);
    s = Seq{};
    s.layers.resize(size_t(shape_.n_layers));
    for (Layer& l : s.layers) l.qsq.assign(size_t(shape_.width()), 0.0f);
  }
  int64_t n_tokens(int seq) const override { return at(seq).n_tokens; }

  void begin_step(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || s.n_tokens + n > shape_.max_tokens)
      fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq, s.n_tokens, n, shape_.max_tokens);
    cur_ = seq;
    step_n_ = n;
    step_sinks_ = std::clamp<int64_t>(opt_.sinks - s.n_tokens, 0, n);
    append_positions(s.pos, s.n_tokens, n);
    rope_.ensure(s.n_tokens + n);
  }

  // Keys are rotated here and stored rotated (the channel scores are those attention sees).
  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width();
    if (int64_t(l.sink_k.size()) != s.n_sinks * C || int64_t(l.buf_k.size()) != s.n_buf * C)
      fail("kv cache: append to layer {} twice in one step", layer);
    std::vector<float> row(static_cast<size_t>(C));
    for (int64_t t = 0; t < step_n_; ++t) {
      std::copy_n(k + t * C, C, row.data());
      rope_.rotate(layer, row.data(), s.pos[size_t(s.n_tokens + t)]);
      auto& dk = t < step_sinks_ ? l.sink_k : l.buf_k;
      auto& dv = t < step_sinks_ ? l.sink_v : l.buf_v;
      const size_t o = dk.size();
      dk.resize(o + size_t(C));
      dv.resize(o + size_t(C));
      floats_to_halves(row.data(), C, dk.data() + o);
      floats_to_halves(v + t * C, C, dv.data() + o);
    }
  }

  void attend(int layer, const KvAttention& a) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
    if (a.n_heads <= 0 || a.n_heads % shape_.n_kv_heads != 0)
      fail("attention: {} query heads do not group over {} KV heads", a.n_heads, shape_.n_kv_heads);
    observe(l, a);
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    const int64_t C = shape_.width();
    std::vector<KvSegment> segs;
    auto exact = [&](const std::vector<uint16_t>& k, const std::vector<uint16_t>& v, int64_t n, int64_t row0) {
      if (n == 0) return;
      KvSegment g;
      g.n = n;
      g.pos = s.pos.data() + row0;
      g.k_roped = true;
      g.dtype = KvDtype::F16;
      g.k = k.data();
      g.v = v.data();
      g.stride = C;
      segs.push_back(std::move(g));
    };
    const int64_t ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    exact(l.sink_k, l.sink_v, ns, 0);
    // The pruned chunks decoded to full f32 rows (dropped channels zero) in a scratch of this
    // call, attended as exact rows.
    att_k_.resize(size_t(s.n_coded * C));
    att_v_.resize(size_t(s.n_coded * C));
    int64_t row0 = 0;
    for (const Chunk& c : l.chunks) {
      decode_chunk(c, 0, c.n, att_k_.data() + row0 * C, att_v_.data() + row0 * C);
      row0 += c.n;
    }
    if (s.n_coded > 0) {
      KvSegment g;
      g.n = s.n_coded;
      g.pos = s.pos.data() + ns;
      g.k_roped = true;
      g.dtype = KvDtype::F32;
      g.k = att_k_.data();
      g.v = att_v_.data();
      g.stride = C;
      segs.push_back(std::move(g));
    }
    exact(l.buf_k, l.buf_v, nb, ns + s.n_coded);
    attend_segments(shape_, rope_, layer, a, s.pos.data() + s.n_tokens, segs);
  }

  KvView read(int layer) override {
    Seq& s = at(cur_);
    const Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width();
    const int64_t ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    const int64_t T = ns + s.n_coded + nb;
    view_k_.resize(size_t(T * C));
    view_v_.resize(size_t(T * C));
    halves_to_floats(l.sink_k.data(), ns * C, view_k_.data());
    halves_to_floats(l.sink_v.data(), ns * C, view_v_.data());
    int64_t row0 = ns;
    for (const Chunk& c : l.chunks) {
      decode_chunk(c, 0, c.n, view_k_.data() + row0 * C, view_v_.data() + row0 * C);
      row0 += c.n;
    }
    halves_to_floats(l.buf_k.data(), nb * C, view_k_.data() + row0 * C);
    halves_to_floats(l.buf_v.data(), nb * C, view_v_.data() + row0 * C);
    KvView view;
    view.dtype = KvDtype::F32;
    view.k = view_k_.data();
    view.v = view_v_.data();
    view.row_stride = C;
    view.n_tokens = T;
    view.pos = s.pos.data();
    view.k_roped = true;
    return view;
  }

  void end_step() override {
    Seq& s = at(cur_);
    s.n_tokens += step_n_;
    s.n_sinks += step_sinks_;
    s.n_buf += step_n_ - step_sinks_;
    step_n_ = step_sinks_ = 0;
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
    const double values = double(s.n_tokens) * double(shape_.n_layers) * 2.0 * double(shape_.width());
    auto bits = [&](int64_t b) { return values > 0 ? 8.0 * double(b) / values : 0.0; };
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
  struct Layer {
    std::vector<uint16_t> sink_k, sink_v, buf_k, buf_v;  // fp16 rows (keys rotated)
    std::vector<Chunk> chunks;
    std::vector<float> qsq;  // (C) sum of q^2 over the window's queries of each KV head's group
  };
  struct Seq {
    int64_t n_tokens = 0, n_sinks = 0, n_buf = 0, n_coded = 0;
    std::vector<int32_t> pos;
    std::vector<Layer> layers;
  };
  struct Bytes {
    int64_t keys = 0, values = 0, lists = 0, sinks = 0, buffer = 0, window = 0;
  };

  Seq& at(int seq) {
    if (seq < 0 || seq >= int(seqs_.size())) fail("kv cache: no sequence {} (have {})", seq, seqs_.size());
    return seqs_[size_t(seq)];
  }
  const Seq& at(int seq) const { return const_cast<ThinkCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    if (layer < 0 || layer >= shape_.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape_.n_layers);
    return s.layers[size_t(layer)];
  }

  Bytes bytes(const Seq& s) const {
    Bytes x;
    for (const Layer& l : s.layers) {
      for (const Chunk& c : l.chunks) {
        x.keys += int64_t(c.kcodes.size());
        x.values += int64_t(c.vcodes.size());
        x.lists += int64_t(c.kept.size());
      }
      x.sinks += 2 * int64_t(l.sink_k.size() + l.sink_v.size());
      x.buffer += 2 * int64_t(l.buf_k.size() + l.buf_v.size());
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
    l.buf_k.erase(l.buf_k.begin(), l.buf_k.begin() + std::ptrdiff_t(n * C));
    l.buf_v.erase(l.buf_v.begin(), l.buf_v.begin() + std::ptrdiff_t(n * C));
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
  KvRope rope_;
  int kept_ = 0;
  std::unique_ptr<Codec> kcodec_, vcodec_;
  int64_t block_ = 1;
  std::string name_;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0, step_sinks_ = 0;
  std::vector<float> view_k_, view_v_;  // read()'s scratch
  std::vector<float> att_k_, att_v_;    // attend()'s decoded chunks
};

int64_t parse_count(const std::string& key, const std::string& val) {
  int64_t x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (r.ec != std::errc() || r.ptr != val.data() + val.size() || x < 0)
    fail("--kv think: {}= must be a count >= 0, got '{}'", key, val);
  return x;
}

}  // namespace

int think_kept_channels(const ThinkOptions& opt, int head_dim) {
  return head_dim - int(std::floor(opt.prune * double(head_dim) + 0.5));
}

std::unique_ptr<KvCache> make_think_cache(const KvShape& shape, const ThinkOptions& opt) {
  return std::make_unique<ThinkCache>(shape, opt);
}

std::unique_ptr<KvCache> make_think_from_spec(const std::string& args, const KvShape& shape) {
  ThinkOptions o;
  size_t at = args.find(',');
  const std::string head = args.substr(0, at);
  double x = 0.0;
  const auto r = std::from_chars(head.data(), head.data() + head.size(), x);
  if (head.empty() || r.ec != std::errc() || r.ptr != head.data() + head.size() || !(x >= 0.0 && x < 1.0))
    fail("--kv think: prune ratio must be a number in [0, 1), got '{}' ({})", head, kUsage);
  o.prune = x;
  while (at != std::string::npos) {
    const size_t next = args.find(',', at + 1);
    const std::string kv = args.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    at = next;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) fail("--kv think: option '{}' is not key=value ({})", kv, kUsage);
    const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
    if (key == "p") o.sinks = parse_count(key, val);
    else if (key == "b") o.buffer = parse_count(key, val);
    else if (key == "k") o.key_codec = val;
    else if (key == "v") o.value_codec = val;
    else fail("--kv think: unknown option '{}' (known: p=, b=, k=, v=)", kv);
  }
  return make_think_cache(shape, o);
}

}  // namespace aquakv
