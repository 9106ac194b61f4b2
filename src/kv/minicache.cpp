// MiniCache (kv/minicache.h): the adjacent-layer merge at end_step, storage and attention.
#include "aquakv/kv/minicache.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <vector>

#include "aquakv/kv/attend.h"
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
  MiniCacheCache(const KvShape& shape, const MiniCacheOptions& o) : shape_(shape), opt_(o), rope_(shape) {
    if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.max_tokens <= 0)
      fail("kv cache minicache: invalid shape");
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

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width();
    if (int64_t(l.sink_k.size()) != s.n_sinks * C || int64_t(l.buf_k.size()) != s.n_buf * C)
      fail("kv cache: append to layer {} twice in one step", layer);
    auto put = [&](std::vector<uint16_t>& d, const float* x, int64_t n) {
      const size_t o = d.size();
      d.resize(o + size_t(n * C));
      floats_to_halves(x, n * C, d.data() + o);
    };
    put(l.sink_k, k, step_sinks_);
    put(l.sink_v, v, step_sinks_);
    put(l.buf_k, k + step_sinks_ * C, step_n_ - step_sinks_);
    put(l.buf_v, v + step_sinks_ * C, step_n_ - step_sinks_);
  }

  void attend(int layer, const KvAttention& a) override {
    if (a.observer != nullptr) return attend_reference(*this, layer, a);
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
    const int64_t C = shape_.width(), ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    std::vector<KvSegment> segs;
    auto exact = [&](const std::vector<uint16_t>& k, const std::vector<uint16_t>& v, int64_t n, int64_t row0) {
      if (n == 0) return;
      KvSegment g;
      g.n = n;
      g.pos = s.pos.data() + row0;
      g.dtype = KvDtype::F16;
      g.k = k.data();
      g.v = v.data();
      g.stride = C;
      segs.push_back(std::move(g));
    };
    exact(l.sink_k, l.sink_v, ns, 0);
    // The chunks restored to f32 rows in a scratch of this call, attended as exact rows.
    att_k_.resize(size_t(s.n_coded * C));
    att_v_.resize(size_t(s.n_coded * C));
    int64_t row0 = 0;
    for (const Chunk& c : l.chunks) {
      decode(c, 0, c.n, att_k_.data() + row0 * C, att_v_.data() + row0 * C);
      row0 += c.n;
    }
    if (s.n_coded > 0) {
      KvSegment g;
      g.n = s.n_coded;
      g.pos = s.pos.data() + ns;
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
    const int64_t C = shape_.width(), ns = s.n_sinks + step_sinks_, nb = s.n_buf + step_n_ - step_sinks_;
    const int64_t T = ns + s.n_coded + nb;
    vk_.resize(size_t(T * C));
    vv_.resize(size_t(T * C));
    halves_to_floats(l.sink_k.data(), ns * C, vk_.data());
    halves_to_floats(l.sink_v.data(), ns * C, vv_.data());
    int64_t row0 = ns;
    for (const Chunk& c : l.chunks) {
      decode(c, 0, c.n, vk_.data() + row0 * C, vv_.data() + row0 * C);
      row0 += c.n;
    }
    halves_to_floats(l.buf_k.data(), nb * C, vk_.data() + row0 * C);
    halves_to_floats(l.buf_v.data(), nb * C, vv_.data() + row0 * C);
    KvView view;
    view.dtype = KvDtype::F32;
    view.k = vk_.data();
    view.v = vv_.data();
    view.row_stride = C;
    view.n_tokens = T;
    view.pos = s.pos.data();
    view.k_roped = false;
    return view;
  }

  void end_step() override {
    Seq& s = at(cur_);
    s.n_tokens += step_n_;
    s.n_sinks += step_sinks_;
    s.n_buf += step_n_ - step_sinks_;
    step_n_ = step_sinks_ = 0;
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
    for (Layer& y : s.layers) {
      y.buf_k.erase(y.buf_k.begin(), y.buf_k.begin() + n * C);
      y.buf_v.erase(y.buf_v.begin(), y.buf_v.begin() + n * C);
    }
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
    const double values = double(s.n_tokens) * double(shape_.n_layers) * 2.0 * double(shape_.width());
    auto bits = [&](int64_t b) { return values > 0 ? 8.0 * double(b) / values : 0.0; };
    const Bytes x = bytes(s);
    return {{"merged pairs (directions, magnitudes, kept rows)", bits(x.merged)},
            {"whole layers (below S, unpaired)", bits(x.whole)},
            {"exact sinks and buffer (fp16)", bits(x.exact)}};
  }

 private:
  struct Layer {
    std::vector<uint16_t> sink_k, sink_v, buf_k, buf_v;  // fp16, keys before RoPE
    std::vector<Chunk> chunks;
  };
  struct Seq {
    int64_t n_tokens = 0, n_sinks = 0, n_buf = 0, n_coded = 0;
    std::vector<int32_t> pos;
    std::vector<Layer> layers;
  };
  struct Bytes {
    int64_t merged = 0, whole = 0, exact = 0;
  };

  Seq& at(int seq) {
    if (seq < 0 || seq >= int(seqs_.size())) fail("kv cache: no sequence {} (have {})", seq, seqs_.size());
    return seqs_[size_t(seq)];
  }
  const Seq& at(int seq) const { return const_cast<MiniCacheCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    if (layer < 0 || layer >= shape_.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape_.n_layers);
    return s.layers[size_t(layer)];
  }

  Bytes bytes(const Seq& s) const {
    Bytes x;
    for (const Layer& l : s.layers) {
      x.exact += 2 * int64_t(l.sink_k.size() + l.sink_v.size() + l.buf_k.size() + l.buf_v.size());
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
  KvRope rope_;
  std::string name_;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0, step_sinks_ = 0;
  std::vector<float> vk_, vv_;
  std::vector<float> att_k_, att_v_;  // attend()'s restored chunks
};

double parse_number(const std::string& key, const std::string& val) {
  double x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (val.empty() || r.ec != std::errc() || r.ptr != val.data() + val.size() || !std::isfinite(x))
    fail("--kv minicache: {} must be a number, got '{}'", key, val);
  return x;
}
int64_t parse_count(const std::string& key, const std::string& val) {
  int64_t x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (val.empty() || r.ec != std::errc() || r.ptr != val.data() + val.size() || x < 0)
    fail("--kv minicache: {} must be a count >= 0, got '{}'", key, val);
  return x;
}

}  // namespace

std::unique_ptr<KvCache> make_minicache(const KvShape& shape, const MiniCacheOptions& opt) {
  return std::make_unique<MiniCacheCache>(shape, opt);
}

std::unique_ptr<KvCache> make_minicache_from_spec(const std::string& args, const KvShape& shape) {
  MiniCacheOptions o;
  // make_cache passes "S[,opts]" after "minicache:" and ",opts" after "minicache,".
  size_t at = args.find(',');
  const std::string head = args.substr(0, at);
  if (!head.empty()) o.start = int(std::min<int64_t>(parse_count("the start layer", head), 1 << 20));
  while (at != std::string::npos) {
    const size_t next = args.find(',', at + 1);
    const std::string kv = args.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    at = next;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) fail("--kv minicache: option '{}' is not key=value", kv);
    const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
    if (key == "t") o.t = parse_number("t=", val);
    else if (key == "keep") o.keep = parse_number("keep=", val);
    else if (key == "p") o.sinks = parse_count("p=", val);
    else if (key == "b") o.buffer = parse_count("b=", val);
    else fail("--kv minicache: unknown option '{}' (known: t=, keep=, p=, b=)", kv);
  }
  return make_minicache(shape, o);
}

}  // namespace aquakv
