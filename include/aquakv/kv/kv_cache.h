// KvCache: the seam between the forward pass and key/value storage. Owns: the interface every
// cache format implements (16/32-bit, block-quantized, HIGGS, AQUA-KV, and policies around
// them), the shape it is built for, and the attention request a layer hands to it. Not: the
// projections and RoPE of queries (engine/), codecs (quant/), the attention kernels (ops/).
//
// The cache format owns attention: it computes a layer's attention on its own storage (codes,
// blocks, f16 rows), so no format has to materialize its rows as dense floats per step.
// Protocol of one forward step over n new tokens of sequence `seq`:
//   begin_step(seq, n)           // the new rows get positions n_tokens(seq) .. + n - 1
//   for layer = 0 .. n_layers-1, in model order:
//       append(layer, k, v)      // this step's n keys (before RoPE) and values, rows of width C
//       attend(layer, a)         // a.out = softmax(q K^T * scale, causal/window mask) V over the
//                                // rows held for the sequence, this step's included
//       finish_layer(layer)      // optional: this step reads and attends the layer no more
//   end_step()
// Walking layers in order lets AQUA-KV rebuild layer l from layer l-1's reconstruction, and
// compress a full exact buffer after attention has used it (in end_step, or for each layer at
// its finish_layer, so that a long step's exact rows are not held for every layer at once).
//
// Positions are explicit: every row carries the position it was appended at, RoPE uses it, and
// masks compare it with the query's position. A format or policy may therefore drop, merge or
// reorder rows (eviction, clustering); n_tokens counts positions consumed, not rows held. Each
// format applies RoPE to keys with the shape's RoPE parameters itself, at write time (plain
// formats store rotated keys) or after decoding (formats that code keys before RoPE, such as
// AQUA-KV whose predictors work on un-rotated keys).
//
// read(layer) is the generic dense path: every row of the layer as floats with its position.
// It is the reference every fused attention path is tested against (attend_reference, used by
// the default attend() and whenever an observer asks for the attention weights).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aquakv/ops/nn.h"

namespace aquakv {

struct KvShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int64_t max_tokens = 0;  // per sequence (the context size)
  // Identity of the model the cache serves, for formats whose stored data is fitted to one
  // model (AQUA-KV adapters): general.architecture and the model fingerprint of
  // engine/fingerprint.h. Empty / 0 = unknown (the format then checks the shape only).
  std::string arch;
  uint64_t model_hash = 0;
  // Keys' rotary embedding (n_rot = 0: none), and optional per-layer overrides for models that
  // mix local and global layers: layer_rope (empty: `rope` on every layer) and window (sliding
  // window per layer: a query at position p sees rows with p - window < pos <= p; 0 or empty:
  // global causal attention).
  RopeParams rope;
  std::vector<RopeParams> layer_rope;
  std::vector<int64_t> window;
  int64_t width() const { return int64_t(n_kv_heads) * head_dim; }  // C
  const RopeParams& rope_of(int layer) const {
    return layer_rope.empty() ? rope : layer_rope[size_t(layer)];
  }
  int64_t window_of(int layer) const { return window.empty() ? 0 : window[size_t(layer)]; }
};

enum class KvDtype { F32, F16 };

// Dense rows for one layer: row t's key is at k + t*row_stride (elements of `dtype`), channels
// head-major (channel = h*head_dim + i), at position pos[t]. Valid until the next call on the
// cache.
struct KvView {
  KvDtype dtype = KvDtype::F32;
  const void* k = nullptr;  // (n_tokens, C) keys, rotated at their positions when k_roped
  const void* v = nullptr;  // (n_tokens, C) values
  int64_t row_stride = 0;   // elements between consecutive rows
  int64_t n_tokens = 0;     // rows
  const int32_t* pos = nullptr;  // (n_tokens) positions, ascending
  bool k_roped = false;
};

// Sees the attention weights of the queries a cache attends for (e.g. a policy that scores rows
// by the attention they receive). An observer makes attend() take the reference path, so the
// weights are the exact softmax.
class KvAttentionObserver {
 public:
  virtual ~KvAttentionObserver() = default;
  // Query i of the step (position qpos), query head h: softmax weights w[j] of rows at pos[j]
  // (rows outside the query's mask are not listed). Called from one thread.
  virtual void on_weights(int layer, int64_t i, int64_t qpos, int h, std::span<const int32_t> pos,
                          std::span<const float> w) = 0;
};

// One layer's attention for the current step's n new tokens.
struct KvAttention {
  int64_t n = 0;             // queries: the step's tokens (the cache checks it)
  const float* q = nullptr;  // (n, n_heads*head_dim) queries, rotated at the step's positions
  float* out = nullptr;      // (n, n_heads*head_dim)
  int n_heads = 0;           // query heads; head h reads KV head h / (n_heads / n_kv_heads)
  float scale = 0.0f;        // score = scale * q.k
  KvAttentionObserver* observer = nullptr;
};

// A sequence's stored state as named byte sections (kv/session_file.h writes them to a file).
// Section names are the format's business ("pos", "k.12", ...); bytes are exactly what the
// format holds in memory, so saving and loading is a copy, never a re-encoding.
class KvStateOut {
 public:
  virtual ~KvStateOut() = default;
  // The bytes must stay valid until the writer is done (the cache is not changed meanwhile).
  virtual void put(const std::string& name, const void* data, int64_t bytes) = 0;
};
class KvStateIn {
 public:
  virtual ~KvStateIn() = default;
  // Bytes of section `name`, or -1 when absent.
  virtual int64_t size(const std::string& name) const = 0;
  // Copies the section into dst (exactly size(name) bytes, checked).
  virtual void get(const std::string& name, void* dst, int64_t bytes) const = 0;
};

// One line per overhead term of the memory report (issue: bits and memory report).
struct KvBitsTerm {
  std::string name;    // "codes", "scales", "exact sinks", ...
  double bits_per_value;
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  virtual const KvShape& shape() const = 0;
  virtual std::string name() const = 0;  // the --kv spelling, e.g. "fp16"

  // Sequences: ids 0..n_seqs()-1. add_sequence returns the new id.
  virtual int add_sequence() = 0;
  virtual int n_seqs() const = 0;
  virtual void clear(int seq) = 0;             // drops the sequence's tokens, keeps the id
  virtual int64_t n_tokens(int seq) const = 0;

  // The step protocol above. append's k and v are (n, C) f32 rows, row-major, keys before RoPE.
  virtual void begin_step(int seq, int64_t n) = 0;
  virtual void append(int layer, const float* k, const float* v) = 0;
  // Attention of the step's n queries over the layer's rows. The default runs
  // attend_reference; formats override it with a path on their own storage.
  virtual void attend(int layer, const KvAttention& a);
  // The dense rows of the layer (this step's appended rows included).
  virtual KvView read(int layer) = 0;
  // Optional, after the layer's attend: the step will neither append, read nor attend this
  // layer again, so the format may do for it now what end_step would do (the compressed
  // formats code the layer's full exact buffer: the same codes, rows attended exactly as
  // before, but a step of 512 rows no longer holds every layer's exact rows at the same time).
  // Callers that read a layer later in the step (a layer-sharing wrapper's source layers) must
  // not call it for that layer; calling it never changes what the step computes. The default
  // does nothing.
  virtual void finish_layer(int layer) {}
  virtual void end_step() = 0;
  // The RoPE table the format rotates this layer's keys with, holding at least the current
  // step's positions (between begin_step and end_step), or null (no table, or not exposed).
  // The forward pass rotates queries with it when its parameters are the model's, instead of
  // a second table of the same values (2 MiB at 8192 positions of a 64-wide head).
  virtual const RopeTable* key_rope(int layer) const { return nullptr; }

  // Bytes held right now for tokens of all sequences (storage only, excluding scratch used to
  // materialize views), and the fixed bytes that do not depend on tokens (e.g. predictors).
  virtual int64_t live_bytes() const = 0;
  virtual int64_t fixed_bytes() const { return 0; }
  // Wall time spent so far coding rows into the stored format (predictors, residual coding and
  // the encoder's reconstruction of compressed formats; 0 where rows are stored as given):
  // `aquakv bench` reports it as the encode share of a prefill.
  virtual int64_t encode_nanoseconds() const { return 0; }
  // Bits per stored value over the sequence's current tokens, term by term.
  virtual std::vector<KvBitsTerm> bits_report(int seq) const = 0;

  // Saved state (between steps only). state_format() identifies what the sections mean: two
  // caches with equal state_format() read each other's sections (e.g. "fp16", or a compressed
  // format's codecs, P, B and adapter checksum). save_state writes the sequence's positions
  // and storage; load_state replaces the sequence's content with a saved state, after which the
  // sequence continues exactly as the saved one would have (same outputs, bit for bit).
  // Formats that cannot save throw Error.
  virtual std::string state_format() const;
  virtual void save_state(int seq, KvStateOut& out) const;
  virtual void load_state(int seq, const KvStateIn& in);
  // Forgets every position >= n (n <= n_tokens), as far as the storage allows, and returns the
  // positions kept (<= n; 0 when nothing can be kept, e.g. rows a sliding window already
  // dropped are needed again). Prompt caches use it to keep a shared prefix.
  virtual int64_t truncate(int seq, int64_t n);

  // Forgets the rows at `positions` (ascending, each held by the sequence) on every layer, between
  // steps: what eviction policies call. n_tokens is unchanged (positions consumed); the rows
  // left keep their positions, and later rows continue at n_tokens. Formats whose storage cannot
  // drop single rows (codes in multi-row blocks) throw Error; the default does.
  virtual void drop_rows(int seq, std::span<const int32_t> positions);
  // Whether drop_rows works on this cache (eviction policies refuse a format up front otherwise).
  virtual bool can_drop_rows() const { return false; }
};

// The generic dense path: read(layer), RoPE of keys not yet rotated, then exact softmax
// attention with positions and the shape's window (float64 sums). The queries' positions are
// those of the step's rows: the last n rows of the view. Reports weights to a.observer.
void attend_reference(KvCache& cache, int layer, const KvAttention& a);

// The plain cache: every value stored in 16-bit (F16) or 32-bit (F32) floats.
std::unique_ptr<KvCache> make_plain_cache(const KvShape& shape, KvDtype dtype);

}  // namespace aquakv
