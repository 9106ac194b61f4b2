// The exact-sinks / chunks / exact-buffer row stack of the chunked reduction formats (ThinK,
// MiniCache) and the helpers every reduction format shares. Owns: a sequence's positions and row
// counts, a layer's fp16 exact sinks and buffer, the step bookkeeping (which of a step's rows are
// sinks), assembling a layer's rows -- [P sinks] [chunks, decoded by the format] [buffer] -- as
// attention segments or a dense view; sequence/layer lookups; the "HEAD[,key=value...]" spec
// parser and bits per original value. Not: what a chunk stores or when the buffer becomes one
// (the formats'), the attention kernels (kv/attend.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aquakv/kv/attend.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/util/error.h"

namespace aquakv {

// A sequence's rows, in position order: [n_sinks exact] [n_coded in chunks] [n_buf exact]; pos
// holds every row's position (n_tokens of them).
struct StackSeq {
  int64_t n_tokens = 0, n_sinks = 0, n_buf = 0, n_coded = 0;
  std::vector<int32_t> pos;
};

// A layer's exact rows, fp16 (keys rotated or not, as the format stores them).
struct StackLayer {
  std::vector<uint16_t> sink_k, sink_v, buf_k, buf_v;
  int64_t sink_bytes() const { return 2 * int64_t(sink_k.size() + sink_v.size()); }
  int64_t buffer_bytes() const { return 2 * int64_t(buf_k.size() + buf_v.size()); }
  // Forgets the first n buffered rows of width C (they went into a chunk).
  void pop_buffer(int64_t n, int64_t C);
};

// Writes a layer's n_coded chunk rows (row-major, width C) as f32 keys and values.
using StackDecoder = std::function<void(float* k, float* v)>;

// The step in progress over a stack with P sinks, and the scratch its readers use.
class SinkBufferStack {
 public:
  SinkBufferStack(const KvShape& shape, int64_t sinks) : shape_(shape), sinks_(sinks), rope_(shape) {}

  const KvRope& rope() const { return rope_; }
  int cur() const { return cur_; }
  int64_t step_n() const { return step_n_; }

  // begin_step: checks the context, gives the step's rows their positions, counts its sinks.
  void begin(StackSeq& s, int seq, int64_t n);
  // Stores the step's rows (n = step_n(), rows of width C): the step's sinks, then the buffer;
  // keys rotated at their positions when `rotate`. Refuses a second append to the layer.
  void append(StackLayer& l, const StackSeq& s, int layer, const float* k, const float* v, bool rotate);
  // Rows held during the step (this step's included).
  int64_t sinks_now(const StackSeq& s) const { return s.n_sinks + step_sinks_; }
  int64_t buffer_now(const StackSeq& s) const { return s.n_buf + step_n_ - step_sinks_; }
  // end_step's counters: the step's rows join the sinks and the buffer.
  void end(StackSeq& s);

  // Attention of the step's queries over the layer's rows; the chunks are decoded by `decode`
  // into an f32 scratch of the call and attended as exact rows.
  void attend(int layer, const KvAttention& a, const StackSeq& s, const StackLayer& l, bool k_roped,
              const StackDecoder& decode);
  // Every row of the layer as f32 (valid until the next call).
  KvView read(const StackSeq& s, const StackLayer& l, bool k_roped, const StackDecoder& decode);

 private:
  KvShape shape_;
  int64_t sinks_;
  KvRope rope_;
  int cur_ = 0;
  int64_t step_n_ = 0, step_sinks_ = 0;
  std::vector<float> att_k_, att_v_, view_k_, view_v_;
};

// seqs[seq], or Error naming the sequence.
template <class Seq>
Seq& sequence_at(std::vector<Seq>& seqs, int seq) {
  if (seq < 0 || seq >= int(seqs.size())) fail("kv cache: no sequence {} (have {})", seq, seqs.size());
  return seqs[size_t(seq)];
}
// Error unless 0 <= layer < n_layers.
void check_layer(int layer, const KvShape& shape);
// Error unless the shape has layers, heads, a head size and a context.
void check_shape(const KvShape& shape, const char* format);

// 8 * bytes / (n_tokens * n_layers * 2 * C): bits per original value of the sequence.
double bits_per_value(int64_t bytes, int64_t n_tokens, const KvShape& shape);

// Spec "HEAD[,key=value]...": returns HEAD and calls on_option(key, value) per option, in order.
// Errors name `format` ("--kv NAME: ...") and end with "(usage)" when usage is not empty.
std::string parse_spec_options(const std::string& args, const std::string& format, const std::string& usage,
                               const std::function<void(const std::string& key, const std::string& val)>& on_option);
// A count >= 0 / a finite number, or "--kv FORMAT: WHAT must be ..., got 'VAL'".
int64_t parse_spec_count(const std::string& format, const std::string& what, const std::string& val);
double parse_spec_number(const std::string& format, const std::string& what, const std::string& val);

}  // namespace aquakv
