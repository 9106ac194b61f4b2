// ClusterKV (kv/clusterkv_cache.h): clustering at end_step, recall and sparse attention.
#include "aquakv/kv/clusterkv_cache.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>
#include <vector>

#include "aquakv/kv/sink_buffer_stack.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr int kIters = 8;

class ClusterKvCache final : public KvCache {
 public:
  ClusterKvCache(const KvShape& shape, const ClusterKvOptions& o) : shape_(shape), opt_(o), rope_(shape) {
    check_shape(shape, "clusterkv");
    if (o.budget < 1 || o.sinks < 0 || o.recent < 0 || o.chunk < 1 || o.per_cluster < 1 || o.per_cluster > o.chunk)
      fail("--kv clusterkv: needs BUDGET >= 1, p >= 0, r >= 0, m >= 1 and 1 <= c <= m (got {}, p={}, r={}, m={}, c={})",
           o.budget, o.sinks, o.recent, o.chunk, o.per_cluster);
    name_ = fmt::format("clusterkv:{},p={},r={},m={},c={}", o.budget, o.sinks, o.recent, o.chunk, o.per_cluster);
  }

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return name_; }
  int add_sequence() override {
    seqs_.emplace_back();
    seqs_.back().layers.resize(size_t(shape_.n_layers));
    for (Layer& l : seqs_.back().layers) l.heads.resize(size_t(shape_.n_kv_heads));
    return int(seqs_.size()) - 1;
  }
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override {
    Seq& s = at(seq);
    s = Seq{};
    s.layers.resize(size_t(shape_.n_layers));
    for (Layer& l : s.layers) l.heads.resize(size_t(shape_.n_kv_heads));
  }
  int64_t n_tokens(int seq) const override { return at(seq).n_tokens; }

  void begin_step(int seq, int64_t n) override {
    Seq& s = at(seq);
    if (n < 0 || s.n_tokens + n > shape_.max_tokens)
      fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq, s.n_tokens, n, shape_.max_tokens);
    cur_ = seq;
    step_n_ = n;
    append_positions(s.pos, s.n_tokens, n);
    rope_.ensure(s.n_tokens + n);
  }

  void append(int layer, const float* k, const float* v) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width();
    if (int64_t(l.k.size()) != s.n_tokens * C) fail("kv cache: append to layer {} twice in one step", layer);
    std::vector<float> row(static_cast<size_t>(C));
    l.k.resize(size_t((s.n_tokens + step_n_) * C));
    l.v.resize(size_t((s.n_tokens + step_n_) * C));
    for (int64_t t = 0; t < step_n_; ++t) {
      std::copy_n(k + t * C, C, row.data());
      rope_.rotate(layer, row.data(), s.pos[size_t(s.n_tokens + t)]);
      floats_to_halves(row.data(), C, l.k.data() + (s.n_tokens + t) * C);
    }
    floats_to_halves(v, step_n_ * C, l.v.data() + s.n_tokens * C);
  }

  // Sparse attention: per query and query head, the sinks, the recalled clusters' rows and the
  // unclustered rows, exact softmax in double over them.
  void attend(int layer, const KvAttention& a) override {
    Seq& s = at(cur_);
    Layer& l = layer_of(s, layer);
    const int64_t C = shape_.width(), hd = shape_.head_dim, rows = s.n_tokens + step_n_;
    if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
    if (int64_t(l.k.size()) != rows * C) fail("kv cache: attention on layer {} before its append in this step", layer);
    if (a.n_heads <= 0 || a.n_heads % shape_.n_kv_heads != 0)
      fail("attention: {} query heads do not group over {} KV heads", a.n_heads, shape_.n_kv_heads);
    const int G = a.n_heads / shape_.n_kv_heads;
    const int64_t window = shape_.window_of(layer);
    const int64_t jobs = a.n * a.n_heads;
    std::vector<int64_t> sel_count(static_cast<size_t>(jobs)), allowed_count(static_cast<size_t>(jobs));
    auto work = [&](int64_t j0, int64_t j1) {
      std::vector<int64_t> pick;
      std::vector<uint8_t> take;
      std::vector<double> sc;
      std::vector<int32_t> seen;
      std::vector<float> w;
      for (int64_t job = j0; job < j1; ++job) {
        const int64_t i = job / a.n_heads;
        const int h = int(job % a.n_heads), g = h / G;
        const int32_t qp = s.pos[size_t(s.n_tokens + i)];
        const float* q = a.q + (i * a.n_heads + h) * hd;
        pick.clear();
        recall(s, l.heads[size_t(g)], q, pick);
        // Rows attended, in position order: sinks, recalled, unclustered, where the mask allows.
        take.assign(size_t(rows), 0);
        for (int64_t r = 0; r < std::min<int64_t>(opt_.sinks, rows); ++r) take[size_t(r)] = 1;
        for (int64_t r : pick) take[size_t(r)] = 1;
        for (int64_t r = s.clustered_end; r < rows; ++r) take[size_t(r)] = 1;
        std::vector<int64_t> rws;
        int64_t allowed = 0;
        for (int64_t r = 0; r < rows; ++r) {
          const int32_t p = s.pos[size_t(r)];
          if (!(p <= qp && (window <= 0 || p > qp - window))) continue;
          ++allowed;
          if (take[size_t(r)]) rws.push_back(r);
        }
        sc.assign(rws.size(), 0.0);
        double mx = -1e300;
        for (size_t t = 0; t < rws.size(); ++t) {
          const uint16_t* kr = l.k.data() + rws[t] * C + g * hd;
          double d = 0;
          for (int64_t c = 0; c < hd; ++c) d += double(q[c]) * double(fp16_to_fp32(kr[c]));
          sc[t] = d * double(a.scale);
          mx = std::max(mx, sc[t]);
        }
        double z = 0;
        for (double& x : sc) z += (x = std::exp(x - mx));
        float* o = a.out + (i * a.n_heads + h) * hd;
        for (int64_t c = 0; c < hd; ++c) {
          double acc = 0;
          for (size_t t = 0; t < rws.size(); ++t) acc += sc[t] * double(fp16_to_fp32(l.v[size_t(rws[t] * C + g * hd + c)]));
          o[c] = rws.empty() ? 0.0f : float(acc / z);
        }
        sel_count[size_t(job)] = int64_t(rws.size());
        allowed_count[size_t(job)] = allowed;
        if (a.observer != nullptr) {
          seen.resize(rws.size());
          w.resize(rws.size());
          for (size_t t = 0; t < rws.size(); ++t) {
            seen[t] = s.pos[size_t(rws[t])];
            w[t] = float(sc[t] / z);
          }
          // The observer is called from one thread (kv_cache.h): serialised below.
          std::lock_guard<std::mutex> lock(observer_mu_);
          a.observer->on_weights(layer, i, qp, h, seen, w);
        }
      }
    };
    if (a.observer != nullptr) work(0, jobs); else parallel_for(jobs, work, 1);
    for (int64_t j = 0; j < jobs; ++j) {
      attended_ += double(sel_count[size_t(j)]);
      allowed_ += double(allowed_count[size_t(j)]);
    }
  }

  KvView read(int layer) override {
    Seq& s = at(cur_);
    const Layer& l = layer_of(s, layer);
    KvView v;
    v.dtype = KvDtype::F16;
    v.k = l.k.data();
    v.v = l.v.data();
    v.row_stride = shape_.width();
    v.n_tokens = int64_t(l.k.size()) / shape_.width();
    v.pos = s.pos.data();
    v.k_roped = true;
    return v;
  }

  void end_step() override {
    Seq& s = at(cur_);
    s.n_tokens += step_n_;
    step_n_ = 0;
    if (s.clustered_end < opt_.sinks) s.clustered_end = std::min<int64_t>(opt_.sinks, s.n_tokens);
    while (s.n_tokens - opt_.recent - s.clustered_end >= opt_.chunk) {
      for (Layer& l : s.layers)
        for (int g = 0; g < shape_.n_kv_heads; ++g) cluster(l, g, s.clustered_end);
      s.clustered_end += opt_.chunk;
    }
  }

  int64_t live_bytes() const override {
    int64_t b = 0;
    for (const Seq& s : seqs_) b += rows_bytes(s) + index_bytes(s);
    return b;
  }
  std::vector<KvBitsTerm> bits_report(int seq) const override {
    const Seq& s = at(seq);
    auto bits = [&](int64_t b) { return bits_per_value(b, s.n_tokens, shape_); };
    return {{"fp16 rows (all resident)", bits(rows_bytes(s))}, {"centroids + cluster members", bits(index_bytes(s))}};
  }

  double attended_share() const { return allowed_ > 0 ? attended_ / allowed_ : 0.0; }

 private:
  struct Cluster {
    std::vector<float> centroid;  // unit vector (head_dim)
    std::vector<int32_t> rows;    // member rows, ascending
  };
  struct Head {
    std::vector<Cluster> clusters;  // in the order they were made (older first)
  };
  struct Layer {
    std::vector<uint16_t> k, v;  // fp16 rows (keys rotated)
    std::vector<Head> heads;
  };
  struct Seq {
    int64_t n_tokens = 0, clustered_end = 0;  // rows [sinks, clustered_end) are clustered
    std::vector<int32_t> pos;
    std::vector<Layer> layers;
  };

  Seq& at(int seq) { return sequence_at(seqs_, seq); }
  const Seq& at(int seq) const { return const_cast<ClusterKvCache*>(this)->at(seq); }
  Layer& layer_of(Seq& s, int layer) {
    check_layer(layer, shape_);
    return s.layers[size_t(layer)];
  }

  int64_t rows_bytes(const Seq& s) const {
    int64_t b = 0;
    for (const Layer& l : s.layers) b += 2 * int64_t(l.k.size() + l.v.size());
    return b;
  }
  // Centroids (f32) and one int32 row index per clustered row and head.
  int64_t index_bytes(const Seq& s) const {
    int64_t b = 0;
    for (const Layer& l : s.layers)
      for (const Head& h : l.heads)
        for (const Cluster& c : h.clusters) b += 4 * int64_t(c.centroid.size() + c.rows.size());
    return b;
  }

  // The clusters of KV head g, best first by q . centroid, until their rows reach the budget.
  void recall(const Seq&, const Head& h, const float* q, std::vector<int64_t>& out) const {
    const int64_t hd = shape_.head_dim;
    std::vector<std::pair<double, size_t>> rank(h.clusters.size());
    for (size_t j = 0; j < h.clusters.size(); ++j) {
      double d = 0;
      for (int64_t c = 0; c < hd; ++c) d += double(q[c]) * double(h.clusters[j].centroid[size_t(c)]);
      rank[j] = {-d, j};
    }
    std::sort(rank.begin(), rank.end());
    int64_t got = 0;
    for (const auto& [neg, j] : rank) {
      if (got >= opt_.budget) break;
      for (int32_t r : h.clusters[j].rows) out.push_back(r);
      got += int64_t(h.clusters[j].rows.size());
    }
  }

  // Spherical k-means of rows [r0, r0 + M) of KV head g (unit keys, double sums).
  void cluster(Layer& l, int g, int64_t r0) {
    const int64_t M = opt_.chunk, hd = shape_.head_dim, C = shape_.width();
    const int64_t k = std::max<int64_t>(1, M / opt_.per_cluster);
    std::vector<double> x(size_t(M * hd));
    for (int64_t r = 0; r < M; ++r) {
      double n2 = 0;
      for (int64_t c = 0; c < hd; ++c) {
        const double e = double(fp16_to_fp32(l.k[size_t((r0 + r) * C + g * hd + c)]));
        x[size_t(r * hd + c)] = e;
        n2 += e * e;
      }
      const double inv = n2 > 0 ? 1.0 / std::sqrt(n2) : 0.0;
      for (int64_t c = 0; c < hd; ++c) x[size_t(r * hd + c)] *= inv;
    }
    std::vector<double> cen(size_t(k * hd));
    for (int64_t j = 0; j < k; ++j) std::copy_n(x.data() + (j * M / k) * hd, hd, cen.data() + j * hd);
    std::vector<int64_t> assign(size_t(M), 0);
    for (int it = 0; it < kIters; ++it) {
      for (int64_t r = 0; r < M; ++r) {
        double best = -1e300;
        for (int64_t j = 0; j < k; ++j) {
          double d = 0;
          for (int64_t c = 0; c < hd; ++c) d += x[size_t(r * hd + c)] * cen[size_t(j * hd + c)];
          if (d > best) { best = d; assign[size_t(r)] = j; }
        }
      }
      if (it + 1 == kIters) break;
      for (int64_t j = 0; j < k; ++j) {
        std::vector<double> m(size_t(hd), 0.0);
        int64_t cnt = 0;
        for (int64_t r = 0; r < M; ++r)
          if (assign[size_t(r)] == j) {
            ++cnt;
            for (int64_t c = 0; c < hd; ++c) m[size_t(c)] += x[size_t(r * hd + c)];
          }
        double n2 = 0;
        for (double e : m) n2 += e * e;
        if (cnt == 0 || n2 == 0) continue;  // empty: keeps its centroid
        for (int64_t c = 0; c < hd; ++c) cen[size_t(j * hd + c)] = m[size_t(c)] / std::sqrt(n2);
      }
    }
    Head& h = l.heads[size_t(g)];
    for (int64_t j = 0; j < k; ++j) {
      Cluster cl;
      for (int64_t r = 0; r < M; ++r)
        if (assign[size_t(r)] == j) cl.rows.push_back(int32_t(r0 + r));
      if (cl.rows.empty()) continue;
      cl.centroid.resize(size_t(hd));
      for (int64_t c = 0; c < hd; ++c) cl.centroid[size_t(c)] = float(cen[size_t(j * hd + c)]);
      h.clusters.push_back(std::move(cl));
    }
  }

  KvShape shape_;
  ClusterKvOptions opt_;
  KvRope rope_;
  std::string name_;
  std::vector<Seq> seqs_;
  int cur_ = 0;
  int64_t step_n_ = 0;
  double attended_ = 0, allowed_ = 0;
  std::mutex observer_mu_;
};

}  // namespace

std::unique_ptr<KvCache> make_clusterkv_cache(const KvShape& shape, const ClusterKvOptions& opt) {
  return std::make_unique<ClusterKvCache>(shape, opt);
}

std::unique_ptr<KvCache> make_clusterkv_from_spec(const std::string& args, const KvShape& shape) {
  ClusterKvOptions o;
  const std::string head = parse_spec_options(args, "clusterkv", "", [&](const std::string& key, const std::string& val) {
    if (key == "p") o.sinks = parse_spec_count("clusterkv", "p=", val);
    else if (key == "r") o.recent = parse_spec_count("clusterkv", "r=", val);
    else if (key == "m") o.chunk = parse_spec_count("clusterkv", "m=", val);
    else if (key == "c") o.per_cluster = parse_spec_count("clusterkv", "c=", val);
    else fail("--kv clusterkv: unknown option '{}={}' (known: p=, r=, m=, c=)", key, val);
  });
  o.budget = parse_spec_count("clusterkv", "BUDGET", head);
  return make_clusterkv_cache(shape, o);
}

double clusterkv_attended_share(const KvCache& cache) {
  const auto* c = dynamic_cast<const ClusterKvCache*>(&cache);
  return c ? c->attended_share() : -1.0;
}

}  // namespace aquakv
