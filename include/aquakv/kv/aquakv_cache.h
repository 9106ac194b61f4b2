// The compressed KV cache family: AQUA-KV (cross-layer predictors + residual codec) and, with no
// predictors, plain per-layer quantization (HIGGS, q8_0, q4_0, KIVI) on the same stack of exact
// sinks, compressed chunks and an exact recent buffer. Owns: the cache's storage and its
// write/read recurrences. Not: the codecs (quant/), predictor fitting (calib/), spec parsing
// (kv/compressed_formats.h).
//
// Storage per sequence and layer, in token order:
//   [P exact sinks (fp16)] [codes of chunk 0, chunk 1, ... (one stream per K/V)] [exact buffer (fp16)]
// Only packed codes + scales and the exact fp16 tokens are kept. When the buffer holds >= B
// tokens at end_step (attention has used them exactly), it is compressed as one chunk
// (rounded down to whole codec blocks), layer by layer in model order:
//   layer 0:  K̂_0 = Q0^-1(Q0(K_0))                     (Q0 = layer-0 codec; "fp16" = exact)
//   layer l:  pk = Wk_l K̂_{l-1} + bk_l;   K̂_l = pk + Q^-1(Q(K_l - pk))
//             pv = Wv_l [K̂_l ; V̂_{l-1}] + bv_l;   V̂_l = pv + Q^-1(Q(V_l - pv))
// read(l) rebuilds layer l of every chunk from its codes with the same recurrence, using the
// layer l-1 reconstruction kept from read(l-1) (the protocol walks layers in order), with
// order-fixed blocked GEMMs over all compressed rows (ops/affine_rows.h): the decoder equals the
// encoder bit for bit and a token's reconstruction does not depend on chunk boundaries (for
// codecs with one-row blocks). Keys are stored before RoPE (the predictors map un-rotated keys;
// the cache rotates them per tile), or, with keys_after_rope (formats without predictors),
// rotated once at append and stored, exact and coded, after RoPE, as llama.cpp stores them, so
// that attention can score them in their codec's inner basis (kv/attend.h).
#pragma once

#include <memory>
#include <string>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/quant/codec.h"

namespace aquakv {

struct CompressedCacheOptions {
  std::string name;           // the --kv spelling reported by name()
  int64_t sinks = 4;          // P: first tokens kept exact forever
  int64_t buffer = 128;       // B: compress the exact buffer when it holds >= B tokens
  // Codecs for rows of C values. Layers >= 1 code residuals (or values when no predictors).
  std::shared_ptr<const Codec> key_codec, value_codec;
  std::shared_ptr<const Codec> layer0_key_codec, layer0_value_codec;  // null: same as above
  // Predictors (layer l >= 1); null: no predictors (predict zero everywhere).
  std::shared_ptr<const Adapters> adapters;
  // Keys stored (exact and coded) after RoPE instead of before; needs no predictors. Codecs with
  // an inner basis then attend on their codes (kv/attend.h).
  bool keys_after_rope = false;
};

std::unique_ptr<KvCache> make_compressed_cache(const KvShape& shape, CompressedCacheOptions opt);

}  // namespace aquakv
