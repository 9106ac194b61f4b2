// Tiled attention over a cache's rows, for the cache formats' attend(). Owns: the description of
// a layer's rows as segments (exact f16/f32 rows, or coded rows decoded a tile at a time), the
// split into tiles and work items, position masks (causal and sliding window), RoPE of keys
// stored un-rotated, per-item online-softmax state and its merge; and the RoPE tables a cache
// uses. Not: the score/softmax/sum kernels (ops/attn_tile.h), the storage (the formats).
//
// Memory: each thread holds one tile of keys and values as f32 (kTileRows x C, 4 x kTileRows for
// many queries), one block of queries packed per KV head and their scores against the tile for
// one KV head at a time (all heads at once only in decode's shared inner basis); nothing scales
// with the context length except the per-item state (queries x head_dim), so long contexts cost
// only their stored rows.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/ops/nn.h"
#include "aquakv/quant/codec.h"

namespace aquakv {

// Rows per tile for decode (rounded up to a segment's block rows); prefill uses 4x.
constexpr int64_t kTileRows = 128;

// A run of rows of one layer with ascending positions.
struct KvSegment {
  int64_t n = 0;                 // rows
  const int32_t* pos = nullptr;  // (n) positions, ascending
  bool k_roped = false;          // keys already rotated at their positions
  // Exact rows: row r at k + r*stride (elements of dtype). Used when k_codec is null.
  KvDtype dtype = KvDtype::F16;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t stride = 0;
  // Coded rows (used when k_codec is set): row r's codes at k_codes + k_codec->encoded_bytes(r)
  // (likewise values); `block` is a multiple of both codecs' block rows. Many queries (prefill)
  // decode a tile at a time to f32. Few queries (decode) use a codec's inner basis when it has
  // one (quant/codec.h): keys scored as (T^T q) . u against rows decoded only to u, values
  // summed as u and turned by T once per query row per step; keys must then be stored rotated
  // (k_roped), since RoPE of the key's own position cannot move to the query side.
  const Codec* k_codec = nullptr;
  const Codec* v_codec = nullptr;
  const uint8_t* k_codes = nullptr;
  const uint8_t* v_codes = nullptr;
  int64_t block = 1;
  // Exact rows made on demand (optional): produce(r0, r1) writes rows [r0, r1) of k / v (r0 and
  // r1 multiples of `block`, or r1 = n) before any tile reads them. Decode calls it tile by tile
  // on the thread that then reads the tile, so the rows are attended while still in that core's
  // cache (AQUA-KV's rebuild); prefill produces every row first. Each row exactly once per call.
  std::function<void(int64_t r0, int64_t r1)> produce;
};

// RoPE tables for every layer of a shape (layers with equal parameters share one).
class KvRope {
 public:
  explicit KvRope(const KvShape& shape);
  void ensure(int64_t n_pos);  // before parallel use
  bool enabled(int layer) const { return table(layer).params().n_rot > 0; }
  const RopeTable& table(int layer) const { return *tables_[size_t(index_[size_t(layer)])]; }
  // table(layer) when it rotates anything, else null (KvCache::key_rope).
  const RopeTable* rotating_table(int layer) const { return enabled(layer) ? &table(layer) : nullptr; }
  // Rotates a row of C key values at position pos.
  void rotate(int layer, float* row, int64_t pos) const;
  // Rotates `rows` rows of C values (stride C) at positions pos[0..rows).
  void rotate_rows(int layer, float* x, int64_t rows, const int32_t* pos) const;
  // The inverse rotation (a row of rotated keys back to keys before RoPE, up to rounding).
  void unrotate(int layer, float* row, int64_t pos) const;

 private:
  int n_kv_heads_, head_dim_;
  std::vector<std::unique_ptr<RopeTable>> tables_;
  std::vector<int> index_;
};

// Sets positions[n_tokens .. n_tokens + n) to n_tokens .. n_tokens + n - 1 (a step's new rows
// continue the sequence), resizing the vector to n_tokens + n.
void append_positions(std::vector<int32_t>& positions, int64_t n_tokens, int64_t n);

// Whether decode steps over q8_0 / q4_0 rows (keys stored after RoPE) run on the blocks
// (ops/attn_qblock.h: the query quantized to int8 blocks once per step, integer key scores,
// values summed from the blocks) instead of decoding each tile to f32. AQUAKV_ATTN_QBLOCK=0|1
// (read once; other values are reported on stderr and ignored). "Decode" is a step whose
// n * (query heads per KV head) < 16 queries take the few-row kernels.
bool attend_qblock_enabled();

// Whether decode steps over HIGGS 2x16 keys (keys stored after RoPE, one HIGGS group per head's
// span) score them by per-query byte tables over the grid (ops/attn_lut.h: 16 entries per pair
// of the query in the inner basis, looked up by the stored codes, error bounded there) instead of
// exact dot products with rows decoded to the inner basis. AQUAKV_ATTN_LUT=0|1 (default 1; read
// once, other values reported on stderr and ignored); set_attend_lut overrides it (tests, benches).
bool attend_lut_enabled();
void set_attend_lut(bool on);

// a.out for the step's a.n queries at positions qpos over the rows of `segs` (in any order of
// segments; the positions decide visibility). Threads: parallel_for over query blocks (many
// queries) or over tile ranges with a final merge (few queries, i.e. decode).
void attend_segments(const KvShape& shape, const KvRope& rope, int layer, const KvAttention& a,
                     const int32_t* qpos, std::span<const KvSegment> segs);

}  // namespace aquakv
