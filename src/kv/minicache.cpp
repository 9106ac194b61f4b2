// MiniCache (kv/minicache.h): the adjacent-layer merge at end_step, storage and attention.
#include "aquakv/kv/minicache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "aquakv/kv/sink_buffer_stack.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

// One chunk of a merged pair: shared directions, per-layer magnitudes, rows kept whole.
struct PairChunk {
  int64_t n = 0;
  std::vector<uint16_t> dir[2];     // K, V: (n, C) unit vectors per head
  std::vector<uint16_t> mag[2];     // K, V: (n, H, 2) magnitudes of layers a and b
  std::vector<int32_t> kept_index;  // (n) index among the rows kept whole, -1 if merged
  std::vector<uint16_t> whole[2][2];  // [layer a|b][K|V]: (kept rows, C)
  int64_t bytes() const {
    int64_t b = 4 * int64_t(kept_index.size());
    for (int s = 0; s < 2; ++s) b += 2 * int64_t(dir[s].size() + mag[s].size() + whole[0][s].size() + whole[1][s].size());
    return b;
  }
};

struct Chunk {
  int64_t n = 0;
  std::vector<uint16_t> k, v;        // whole rows (layers below S, a last unpaired layer)
  std::shared_ptr<PairChunk> pair;   // merged layers: the pair's chunk
  int which = 0;                     // 0: the pair's first layer, 1: its second
};

class MiniCacheCache final : public KvCache {
 public:
  MiniCacheCache(const KvShape& shape, const MiniCacheOptions& o) : shape_(shape), opt_(o), stack_(shape, o.sinks) {
    check_shape(shape, "minicache");
    if (opt_.start < 0) opt_.start = shape.n_layers / 2;
    if (opt_.start > shape.n_layers) fail("--kv minicache: start layer {} beyond the model's {} layers", opt_.start, shape.n_layers);
    if (!(opt_.t > 0.0 && opt_.t < 1.0)) fail("--kv minicache: t must be in (0, 1), got {}", opt_.t);
    if (!(opt_.keep >= 0.0 && opt_.keep <= 1.0)) fail("--kv minicache: keep must be in [0, 1], got {}", opt_.keep);
    if (opt_.sinks < 0 || opt_.buffer < 1) fail("--kv minicache: p must be >= 0 and b >= 1 (got p={}, b={})", opt_.sinks, opt_.buffer);
    name_ = fmt::format("minicache:{},t={:g},keep={:g},p={},b={}", opt_.start, opt_.t, opt_.keep, opt_.sinks, opt_.buffer);
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

  void begin_step(int seq, int64_t n) override { stack_.begin(at(seq), seq, n); }

  // Keys are stored before RoPE (the merge compares both layers' keys of a position).
  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(stack_.cur());
    stack_.append(layer_of(s, layer), s, layer, k, v, /*rotate=*/false);
  }

  void attend(int layer, const KvAttention& a) override {
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    Seq& s = at(stack_.cur());
    const Layer& l = layer_of(s, layer);
    // The chunks restored to f32 rows in a scratch of this call, attended as exact rows.
    stack_.attend(layer, a, s, l, /*k_roped=*/false, decoder(l));
  }

  KvView read(int layer) override {
    Seq& s = at(stack_.cur());
    const Layer& l = layer_of(s, layer);
    return stack_.read(s, l, /*k_roped=*/false, decoder(l));
  }

  void end_step() override {
    Seq& s = at(stack_.cur());
    stack_.end(s);
    if (s.n_buf < opt_.buffer) return;
    const int64_t n = s.n_buf, C = shape_.width();
    const int L = shape_.n_layers;
    for (int l = 0; l < L;) {
      const bool paired = l >= opt_.start && l + 1 < L;
      if (paired) {
        auto pc = merge(s.layers[size_t(l)], s.layers[size_t(l + 1)], n);
        for (int w = 0; w < 2; ++w) s.layers[size_t(l + w)].chunks.push_back({n, {}, {}, pc, w});
        l += 2;
      } else {
        Layer& y = s.layers[size_t(l)];
        y.chunks.push_back({n, {y.buf_k.begin(), y.buf_k.begin() + n * C}, {y.buf_v.begin(), y.buf_v.begin() + n * C}, nullptr, 0});
        l += 1;
      }
    }
    for (Layer& y : s.layers) y.pop_buffer(n, C);
    s.n_buf = 0;
    s.n_coded += n;
  }

  int64_t live_bytes() const override {
    int64_t b = 0;
    for (const Seq& s : seqs_) {
      const Bytes x = bytes(s);
      b += x.merged + x.whole + x.exact;
    }
    return b;
  }
  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    auto bits = [&](int64_t b) { return bits_per_value(b, s.n_tokens, shape_); };
    const Bytes x = bytes(s);
    return {{"merged pairs (directions, magnitudes, kept rows)", bits(x.merged)},
            {"whole layers (below S, unpaired)", bits(x.whole)},
            {"exact sinks and buffer (fp16)", bits(x.exact)}};
  }

 private:
  struct Layer : StackLayer {  // exact rows fp16, keys before RoPE
    std::vector<Chunk> chunks;
  };
  struct Seq : StackSeq {
    std::vector<Layer> layers;
  };
  struct Bytes {
    int64_t merged = 0, whole = 0, exact = 0;
  };

  Seq& at(int seq) { return sequence_at(seqs_, seq); }
  const Seq& at(int seq) const { return const_cast<MiniCacheCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    check_layer(layer, shape_);
    return s.layers[size_t(layer)];
  }
  // Restores every chunk of the layer, in order.
  StackDecoder decoder(const Layer& l) const {
    return [this, &l](float* k, float* v) {
      const int64_t C = shape_.width();
      int64_t row0 = 0;
      for (const Chunk& c : l.chunks) {
        decode(c, 0, c.n, k + row0 * C, v + row0 * C);
        row0 += c.n;
      }
    };
  }

  Bytes bytes(const Seq& s) const {
    Bytes x;
    for (const Layer& l : s.layers) {
      x.exact += l.sink_bytes() + l.buffer_bytes();
      for (const Chunk& c : l.chunks) {
        x.whole += 2 * int64_t(c.k.size() + c.v.size());
        if (c.pair && c.which == 0) x.merged += c.pair->bytes();  // counted once per pair
      }
    }
    return x;
  }

  // Merges the first n buffered rows of layers a and b.
  std::shared_ptr<PairChunk> merge(const Layer& a, const Layer& b, int64_t n) {
    const int64_t C = shape_.width();
    const int H = shape_.n_kv_heads, hd = shape_.head_dim;
    auto pc = std::make_shared<PairChunk>();
    pc->n = n;
    std::vector<float> x[2][2];  // [layer][K|V] (n, C)
    const std::vector<uint16_t>* src[2][2] = {{&a.buf_k, &a.buf_v}, {&b.buf_k, &b.buf_v}};
    for (int w = 0; w < 2; ++w)
      for (int st = 0; st < 2; ++st) {
        x[w][st].resize(size_t(n * C));
        halves_to_floats(src[w][st]->data(), n * C, x[w][st].data());
      }
    std::vector<float> dir(size_t(n * C)), mag(size_t(n * H * 2));
    std::vector<double> dist(size_t(n), 0.0);
    for (int st = 0; st < 2; ++st) {
      for (int64_t r = 0; r < n; ++r)
        for (int h = 0; h < H; ++h) {
          const float* p = x[0][st].data() + r * C + h * hd;
          const float* q = x[1][st].data() + r * C + h * hd;
          double np = 0, nq = 0, dot = 0;
          for (int i = 0; i < hd; ++i) {
            np += double(p[i]) * p[i];
            nq += double(q[i]) * q[i];
            dot += double(p[i]) * q[i];
          }
          np = std::sqrt(np);
          nq = std::sqrt(nq);
          const double ip = np > 0 ? 1.0 / np : 0.0, iq = nq > 0 ? 1.0 / nq : 0.0;
          const double cosv = np > 0 && nq > 0 ? std::clamp(dot * ip * iq, -1.0, 1.0) : 1.0;
          const double O = std::acos(cosv), so = std::sin(O);
          double wa = 1.0 - opt_.t, wb = opt_.t;
          if (so > 1e-6) {
            wa = std::sin((1.0 - opt_.t) * O) / so;
            wb = std::sin(opt_.t * O) / so;
          }
          // e = wa u + wb w, normalised (exactly unit for SLERP; the linear fallback needs it).
          double en = 0;
          std::vector<double> e(static_cast<size_t>(hd));
          for (int i = 0; i < hd; ++i) {
            e[size_t(i)] = wa * double(p[i]) * ip + wb * double(q[i]) * iq;
            en += e[size_t(i)] * e[size_t(i)];
          }
          const double ie = en > 0 ? 1.0 / std::sqrt(en) : 0.0;
          for (int i = 0; i < hd; ++i) dir[size_t(r * C + h * hd + i)] = float(e[size_t(i)] * ie);
          mag[size_t((r * H + h) * 2 + 0)] = float(np);
          mag[size_t((r * H + h) * 2 + 1)] = float(nq);
          dist[size_t(r)] += O / M_PI / double(2 * H);
        }
      pc->dir[st].resize(size_t(n * C));
      pc->mag[st].resize(size_t(n * H * 2));
      floats_to_halves(dir.data(), n * C, pc->dir[st].data());
      floats_to_halves(mag.data(), n * H * 2, pc->mag[st].data());
    }
    // Unmergeable rows: the ceil(keep * n) largest distances (equal: the earlier row).
    const int64_t nk = int64_t(std::ceil(opt_.keep * double(n) - 1e-9));
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return dist[size_t(i)] > dist[size_t(j)]; });
    std::vector<uint8_t> keep(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < nk; ++i) keep[size_t(order[size_t(i)])] = 1;
    pc->kept_index.assign(size_t(n), -1);
    int32_t m = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (!keep[size_t(r)]) continue;
      pc->kept_index[size_t(r)] = m++;
      for (int w = 0; w < 2; ++w)
        for (int st = 0; st < 2; ++st) {
          const uint16_t* row = src[w][st]->data() + r * C;
          pc->whole[w][st].insert(pc->whole[w][st].end(), row, row + C);
        }
    }
    return pc;
  }

  // Rows [r0, r1) of a chunk as floats (keys before RoPE). Thread-safe.
  void decode(const Chunk& c, int64_t r0, int64_t r1, float* k, float* v) const {
    const int64_t C = shape_.width(), n = r1 - r0;
    if (!c.pair) {
      halves_to_floats(c.k.data() + r0 * C, n * C, k);
      halves_to_floats(c.v.data() + r0 * C, n * C, v);
      return;
    }
    const PairChunk& p = *c.pair;
    const int H = shape_.n_kv_heads, hd = shape_.head_dim;
    float* out[2] = {k, v};
    for (int st = 0; st < 2; ++st) {
      halves_to_floats(p.dir[st].data() + r0 * C, n * C, out[st]);
      for (int64_t r = 0; r < n; ++r) {
        const int32_t ki = p.kept_index[size_t(r0 + r)];
        if (ki >= 0) {
          halves_to_floats(p.whole[c.which][st].data() + int64_t(ki) * C, C, out[st] + r * C);
          continue;
        }
        for (int h = 0; h < H; ++h) {
          const float m = fp16_to_fp32(p.mag[st][size_t(((r0 + r) * H + h) * 2 + c.which)]);
          for (int i = 0; i < hd; ++i) out[st][r * C + h * hd + i] *= m;
        }
      }
    }
  }

  KvShape shape_;
  MiniCacheOptions opt_;
  SinkBufferStack stack_;
  std::string name_;
  std::vector<Seq> seqs_;
};

}  // namespace

std::unique_ptr<KvCache> make_minicache(const KvShape& shape, const MiniCacheOptions& opt) {
  return std::make_unique<MiniCacheCache>(shape, opt);
}

std::unique_ptr<KvCache> make_minicache_from_spec(const std::string& args, const KvShape& shape) {
  MiniCacheOptions o;
  // make_cache passes "S[,opts]" after "minicache:" and ",opts" after "minicache,".
  const std::string head = parse_spec_options(args, "minicache", "", [&](const std::string& key, const std::string& val) {
    if (key == "t") o.t = parse_spec_number("minicache", "t=", val);
    else if (key == "keep") o.keep = parse_spec_number("minicache", "keep=", val);
    else if (key == "p") o.sinks = parse_spec_count("minicache", "p=", val);
    else if (key == "b") o.buffer = parse_spec_count("minicache", "b=", val);
    else fail("--kv minicache: unknown option '{}={}' (known: t=, keep=, p=, b=)", key, val);
  });
  if (!head.empty()) o.start = int(std::min<int64_t>(parse_spec_count("minicache", "the start layer", head), 1 << 20));
  return make_minicache(shape, o);
}

}  // namespace aquakv
