#include "aquakv/calib/capture.h"

#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace aquakv {

RecordingCache::RecordingCache(const KvShape& shape) : shape_(shape), rope_(shape) {
  if (shape.n_layers <= 0 || shape.width() <= 0 || shape.max_tokens <= 0)
    fail("recording cache: invalid shape ({} layers, width {}, {} tokens)", shape.n_layers, shape.width(), shape.max_tokens);
}

RecordingCache::Seq& RecordingCache::at(int seq) {
  if (seq < 0 || seq >= int(seqs_.size())) fail("recording cache: no sequence {}", seq);
  return seqs_[size_t(seq)];
}
const RecordingCache::Seq& RecordingCache::at(int seq) const { return const_cast<RecordingCache*>(this)->at(seq); }

int RecordingCache::add_sequence() {
  Seq s;
  const size_t L = size_t(shape_.n_layers);
  s.k.resize(L); s.v.resize(L); s.rk.resize(L); s.rv.resize(L);
  seqs_.push_back(std::move(s));
  return int(seqs_.size()) - 1;
}

void RecordingCache::clear(int seq) {
  Seq& s = at(seq);
  s.n_tokens = 0;
  std::vector<int32_t>().swap(s.pos);
  for (auto& x : s.k) std::vector<float>().swap(x);  // release: windows are done with
  for (auto& x : s.v) std::vector<float>().swap(x);
}

int64_t RecordingCache::n_tokens(int seq) const { return at(seq).n_tokens; }

void RecordingCache::begin_step(int seq, int64_t n) {
  Seq& s = at(seq);
  if (n < 0 || s.n_tokens + n > shape_.max_tokens)
    fail("recording cache: sequence {} holds {} tokens, a step of {} exceeds {}", seq, s.n_tokens, n, shape_.max_tokens);
  cur_ = seq;
  step_n_ = n;
  append_positions(s.pos, s.n_tokens, n);
  rope_.ensure(s.n_tokens + n);
}

void RecordingCache::record_queries(int layer, const KvAttention& a) {
  const int64_t C = shape_.width(), hd = shape_.head_dim, hkv = shape_.n_kv_heads;
  if (a.n_heads < hkv || a.n_heads % hkv != 0) return;  // not a GQA layout: no statistics
  if (q2_.empty()) q2_.assign(size_t(shape_.n_layers), std::vector<double>(size_t(C), 0.0));
  std::vector<double>& acc = q2_[size_t(layer)];
  const int64_t group = a.n_heads / hkv;
  q_group_ = group;
  const double s2 = double(a.scale) * double(a.scale);
  for (int64_t t = 0; t < a.n; ++t) {
    const float* q = a.q + t * a.n_heads * hd;
    for (int64_t h = 0; h < a.n_heads; ++h)
      for (int64_t i = 0; i < hd; ++i) {
        const double x = q[h * hd + i];
        acc[size_t((h / group) * hd + i)] += s2 * x * x;
      }
  }
  if (layer == 0) q_rows_ += a.n;
}

void RecordingCache::attend(int layer, const KvAttention& a) {
  record_queries(layer, a);
  if (a.observer != nullptr) return attend_reference(*this, layer, a);
  Seq& s = at(cur_);
  if (a.n != step_n_) fail("recording cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
  KvSegment g;
  g.n = int64_t(s.k[size_t(layer)].size()) / shape_.width();
  g.pos = s.pos.data();
  g.dtype = KvDtype::F32;
  g.k = s.k[size_t(layer)].data();
  g.v = s.v[size_t(layer)].data();
  g.stride = shape_.width();
  attend_segments(shape_, rope_, layer, a, s.pos.data() + s.n_tokens, {&g, 1});
}

void RecordingCache::append(int layer, const float* k, const float* v) {
  if (layer < 0 || layer >= shape_.n_layers) fail("recording cache: layer {} out of range", layer);
  Seq& s = at(cur_);
  const int64_t m = step_n_ * shape_.width();
  const size_t l = size_t(layer);
  s.k[l].insert(s.k[l].end(), k, k + m);
  s.v[l].insert(s.v[l].end(), v, v + m);
  for (int64_t i = 0; i < m; ++i) {
    s.rk[l].push_back(fp32_to_fp16(k[i]));
    s.rv[l].push_back(fp32_to_fp16(v[i]));
  }
}

KvView RecordingCache::read(int layer) {
  Seq& s = at(cur_);
  KvView view;
  view.dtype = KvDtype::F32;
  view.k = s.k[size_t(layer)].data();
  view.v = s.v[size_t(layer)].data();
  view.row_stride = shape_.width();
  view.n_tokens = s.n_tokens + step_n_;
  view.pos = s.pos.data();
  view.k_roped = false;
  return view;
}

void RecordingCache::end_step() {
  at(cur_).n_tokens += step_n_;
  step_n_ = 0;
}

int64_t RecordingCache::live_bytes() const {
  int64_t b = 0;
  for (const Seq& s : seqs_)
    for (size_t l = 0; l < s.k.size(); ++l) b += int64_t(s.k[l].size() + s.v[l].size()) * 4;
  return b;
}

std::vector<KvBitsTerm> RecordingCache::bits_report(int) const { return {{"f32 values", 32.0}}; }

int64_t RecordingCache::recorded_rows(int seq) const {
  return int64_t(at(seq).rk[0].size()) / shape_.width();
}

KvSamples RecordingCache::take_samples(const std::vector<int>& train, const std::vector<int>& val) {
  KvSamples out;
  out.n_layers = shape_.n_layers;
  out.width = shape_.width();
  out.k.resize(size_t(out.n_layers));
  out.v.resize(size_t(out.n_layers));
  out.q2 = q2_;
  out.q_rows = q_rows_;
  out.n_kv_heads = shape_.n_kv_heads;
  out.q_group = q_group_;
  // Average each RoPE pair's two channels: rotation by any angle keeps the pair's energy, so a
  // weight shared by the pair measures pre-RoPE errors as the rotated keys meet the queries.
  const int64_t hd = shape_.head_dim;
  for (size_t l = 0; l < out.q2.size(); ++l) {
    if (!rope_.enabled(int(l))) continue;
    const RopeParams& p = rope_.table(int(l)).params();
    for (int64_t h = 0; h < shape_.n_kv_heads; ++h)
      for (int64_t i = 0; i < p.n_rot / 2; ++i) {
        const int64_t a = p.type == RopeType::kNeox ? i : 2 * i, b = p.type == RopeType::kNeox ? i + p.n_rot / 2 : 2 * i + 1;
        double& x = out.q2[l][size_t(h * hd + a)];
        double& y = out.q2[l][size_t(h * hd + b)];
        x = y = 0.5 * (x + y);
      }
  }
  for (int seq : train) out.n_train += recorded_rows(seq);
  for (int seq : val) out.n_val += recorded_rows(seq);
  for (size_t l = 0; l < size_t(out.n_layers); ++l) {
    out.k[l].reserve(size_t(out.rows() * out.width));
    out.v[l].reserve(size_t(out.rows() * out.width));
    for (const auto* list : {&train, &val})
      for (int seq : *list) {
        Seq& s = at(seq);
        out.k[l].insert(out.k[l].end(), s.rk[l].begin(), s.rk[l].end());
        out.v[l].insert(out.v[l].end(), s.rv[l].begin(), s.rv[l].end());
        std::vector<uint16_t>().swap(s.rk[l]);
        std::vector<uint16_t>().swap(s.rv[l]);
      }
  }
  return out;
}

}  // namespace aquakv
