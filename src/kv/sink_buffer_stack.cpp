// The sink/chunk/buffer row stack and the reduction formats' shared helpers
// (kv/sink_buffer_stack.h).
#include "aquakv/kv/sink_buffer_stack.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "aquakv/ops/half_rows.h"

namespace aquakv {

void StackLayer::pop_buffer(int64_t n, int64_t C) {
  buf_k.erase(buf_k.begin(), buf_k.begin() + std::ptrdiff_t(n * C));
  buf_v.erase(buf_v.begin(), buf_v.begin() + std::ptrdiff_t(n * C));
}

void SinkBufferStack::begin(StackSeq& s, int seq, int64_t n) {
  if (n < 0 || s.n_tokens + n > shape_.max_tokens)
    fail("kv cache: sequence {} holds {} tokens, a step of {} exceeds the context of {}", seq, s.n_tokens, n, shape_.max_tokens);
  cur_ = seq;
  step_n_ = n;
  step_sinks_ = std::clamp<int64_t>(sinks_ - s.n_tokens, 0, n);
  append_positions(s.pos, s.n_tokens, n);
  rope_.ensure(s.n_tokens + n);
}

void SinkBufferStack::append(StackLayer& l, const StackSeq& s, int layer, const float* k, const float* v, bool rotate) {
  const int64_t C = shape_.width();
  if (int64_t(l.sink_k.size()) != s.n_sinks * C || int64_t(l.buf_k.size()) != s.n_buf * C)
    fail("kv cache: append to layer {} twice in one step", layer);
  std::vector<float> row(static_cast<size_t>(C));
  for (int64_t t = 0; t < step_n_; ++t) {
    const float* kr = k + t * C;
    if (rotate) {
      std::copy_n(kr, C, row.data());
      rope_.rotate(layer, row.data(), s.pos[size_t(s.n_tokens + t)]);
      kr = row.data();
    }
    auto& dk = t < step_sinks_ ? l.sink_k : l.buf_k;
    auto& dv = t < step_sinks_ ? l.sink_v : l.buf_v;
    const size_t o = dk.size();
    dk.resize(o + size_t(C));
    dv.resize(o + size_t(C));
    floats_to_halves(kr, C, dk.data() + o);
    floats_to_halves(v + t * C, C, dv.data() + o);
  }
}

void SinkBufferStack::end(StackSeq& s) {
  s.n_tokens += step_n_;
  s.n_sinks += step_sinks_;
  s.n_buf += step_n_ - step_sinks_;
  step_n_ = step_sinks_ = 0;
}

void SinkBufferStack::attend(int layer, const KvAttention& a, const StackSeq& s, const StackLayer& l, bool k_roped,
                             const StackDecoder& decode) {
  if (a.n != step_n_) fail("kv cache: attention for {} queries in a step of {} tokens", a.n, step_n_);
  const int64_t C = shape_.width(), ns = sinks_now(s), nb = buffer_now(s);
  std::vector<KvSegment> segs;
  auto add = [&](KvDtype dtype, const void* k, const void* v, int64_t n, int64_t row0) {
    if (n == 0) return;
    KvSegment g;
    g.n = n;
    g.pos = s.pos.data() + row0;
    g.k_roped = k_roped;
    g.dtype = dtype;
    g.k = k;
    g.v = v;
    g.stride = C;
    segs.push_back(std::move(g));
  };
  add(KvDtype::F16, l.sink_k.data(), l.sink_v.data(), ns, 0);
  att_k_.resize(size_t(s.n_coded * C));
  att_v_.resize(size_t(s.n_coded * C));
  if (s.n_coded > 0) decode(att_k_.data(), att_v_.data());
  add(KvDtype::F32, att_k_.data(), att_v_.data(), s.n_coded, ns);
  add(KvDtype::F16, l.buf_k.data(), l.buf_v.data(), nb, ns + s.n_coded);
  attend_segments(shape_, rope_, layer, a, s.pos.data() + s.n_tokens, segs);
}

KvView SinkBufferStack::read(const StackSeq& s, const StackLayer& l, bool k_roped, const StackDecoder& decode) {
  const int64_t C = shape_.width(), ns = sinks_now(s), nb = buffer_now(s);
  const int64_t T = ns + s.n_coded + nb;
  view_k_.resize(size_t(T * C));
  view_v_.resize(size_t(T * C));
  halves_to_floats(l.sink_k.data(), ns * C, view_k_.data());
  halves_to_floats(l.sink_v.data(), ns * C, view_v_.data());
  if (s.n_coded > 0) decode(view_k_.data() + ns * C, view_v_.data() + ns * C);
  halves_to_floats(l.buf_k.data(), nb * C, view_k_.data() + (ns + s.n_coded) * C);
  halves_to_floats(l.buf_v.data(), nb * C, view_v_.data() + (ns + s.n_coded) * C);
  KvView view;
  view.dtype = KvDtype::F32;
  view.k = view_k_.data();
  view.v = view_v_.data();
  view.row_stride = C;
  view.n_tokens = T;
  view.pos = s.pos.data();
  view.k_roped = k_roped;
  return view;
}

void check_layer(int layer, const KvShape& shape) {
  if (layer < 0 || layer >= shape.n_layers) fail("kv cache: layer {} outside [0, {})", layer, shape.n_layers);
}

void check_shape(const KvShape& shape, const char* format) {
  if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.max_tokens <= 0)
    fail("kv cache {}: invalid shape (layers {}, kv heads {}, head dim {}, context {})", format, shape.n_layers,
         shape.n_kv_heads, shape.head_dim, shape.max_tokens);
}

double bits_per_value(int64_t bytes, int64_t n_tokens, const KvShape& shape) {
  const double values = double(n_tokens) * double(shape.n_layers) * 2.0 * double(shape.width());
  return values > 0 ? 8.0 * double(bytes) / values : 0.0;
}

std::string parse_spec_options(const std::string& args, const std::string& format, const std::string& usage,
                               const std::function<void(const std::string&, const std::string&)>& on_option) {
  const std::string tail = usage.empty() ? "" : " (" + usage + ")";
  size_t at = args.find(',');
  const std::string head = args.substr(0, at);
  while (at != std::string::npos) {
    const size_t next = args.find(',', at + 1);
    const std::string kv = args.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
    at = next;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) fail("--kv {}: option '{}' is not key=value{}", format, kv, tail);
    on_option(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return head;
}

int64_t parse_spec_count(const std::string& format, const std::string& what, const std::string& val) {
  int64_t x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (val.empty() || r.ec != std::errc() || r.ptr != val.data() + val.size() || x < 0)
    fail("--kv {}: {} must be a count >= 0, got '{}'", format, what, val);
  return x;
}

double parse_spec_number(const std::string& format, const std::string& what, const std::string& val) {
  double x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (val.empty() || r.ec != std::errc() || r.ptr != val.data() + val.size() || !std::isfinite(x))
    fail("--kv {}: {} must be a number, got '{}'", format, what, val);
  return x;
}

}  // namespace aquakv
