// KvCache: the seam between the forward pass and key/value storage. Owns: the interface every
// cache format implements (16/32-bit, block-quantized, HIGGS, AQUA-KV) and the shape it is
// built for. Not: attention or RoPE (engine/), codecs (quant/).
//
// Protocol of one forward step over n new tokens of sequence `seq`:
//   begin_step(seq, n)
//   for layer = 0 .. n_layers-1, in model order:
//       append(layer, k, v)   // this step's n keys (pre-RoPE) and values, rows of width C
//       view = read(layer)    // all tokens of the sequence so far, this step's included
//       ... attention uses view (the engine applies RoPE to keys at read time) ...
//   end_step()
// Walking layers in order lets AQUA-KV rebuild layer l from layer l-1's reconstruction, and
// compress a full exact buffer after attention has used it (inside append/read of the next step
// or in end_step). Positions are implicit: token i of a sequence has position i.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  int64_t width() const { return int64_t(n_kv_heads) * head_dim; }  // C
};

enum class KvDtype { F32, F16 };

// Dense rows for one layer: token t's key is at k + t*row_stride (elements of `dtype`),
// channels head-major (channel = h*head_dim + i). Valid until the next call on the cache.
struct KvView {
  KvDtype dtype = KvDtype::F32;
  const void* k = nullptr;  // (n_tokens, C) keys before RoPE
  const void* v = nullptr;  // (n_tokens, C) values
  int64_t row_stride = 0;   // elements between consecutive tokens
  int64_t n_tokens = 0;
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

  // The step protocol above. append's k and v are (n, C) f32 rows, row-major.
  virtual void begin_step(int seq, int64_t n) = 0;
  virtual void append(int layer, const float* k, const float* v) = 0;
  virtual KvView read(int layer) = 0;
  virtual void end_step() = 0;

  // Bytes held right now for tokens of all sequences (storage only, excluding scratch used to
  // materialize views), and the fixed bytes that do not depend on tokens (e.g. predictors).
  virtual int64_t live_bytes() const = 0;
  virtual int64_t fixed_bytes() const { return 0; }
  // Bits per stored value over the sequence's current tokens, term by term.
  virtual std::vector<KvBitsTerm> bits_report(int seq) const = 0;
};

// The plain cache: every value stored in 16-bit (F16) or 32-bit (F32) floats.
std::unique_ptr<KvCache> make_plain_cache(const KvShape& shape, KvDtype dtype);

}  // namespace aquakv
