// Tiled attention over segments (kv/attend.h) and the dense reference path (kv/kv_cache.h).
#include "aquakv/kv/attend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "aquakv/ops/attn_lut.h"
#include "aquakv/ops/attn_qblock.h"
#include "aquakv/ops/attn_tile.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/ops/matmul.h"
#include "aquakv/quant/block_codecs.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/quant/rotated_block_codec.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kQueryBlock = 64;  // queries per block (prefill); x G query heads per KV head

// A 0|1 switch from the environment, read once by its caller: `name` unset or empty gives
// `fallback`; any other value than 0 or 1 is named on stderr and ignored.
int env_switch(const char* name, int fallback) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  if (std::strcmp(e, "0") == 0) return 0;
  if (std::strcmp(e, "1") == 0) return 1;
  std::fprintf(stderr, "aquakv: %s='%s' is not 0 or 1; ignored\n", name, e);
  return fallback;
}

// AQUAKV_ATTN_QBLOCK=0|1: decode steps over q8_0 / q4_0 rows score keys by integer dot products
// on the blocks and sum values from the blocks (ops/attn_qblock.h), or decode each tile to f32
// first (0). Default 1.
bool qblock_env() {
  static const bool on = env_switch("AQUAKV_ATTN_QBLOCK", 1) != 0;
  return on;
}

// AQUAKV_ATTN_LUT=0|1: decode steps over HIGGS 2x16 keys score them by per-query byte tables
// (ops/attn_lut.h), or exactly in the inner basis on rows decoded to floats (0). Default 1;
// set_attend_lut overrides it.
int& lut_mode() {
  static int mode = env_switch("AQUAKV_ATTN_LUT", 1);
  return mode;
}

// The block type of a codec that the q8_0/q4_0 kernels read (false for every other codec);
// *rotated: the blocks hold Hadamard-turned heads (q8_0r, q4_0r), read in their inner basis.
bool qblock_type(const Codec* codec, GgmlType* type, bool* rotated) {
  uint32_t t;
  if (const auto* b = dynamic_cast<const GgmlBlockCodec*>(codec)) {
    t = b->ggml_type();
    *rotated = false;
  } else if (const auto* r = dynamic_cast<const RotatedBlockCodec*>(codec)) {
    t = r->ggml_type();
    *rotated = true;
  } else {
    return false;
  }
  if (!attn_qblock_supported(GgmlType(t))) return false;
  *type = GgmlType(t);
  return true;
}

struct Tile {
  int seg;
  int64_t r0, r1;
};

// Online-softmax state of M query rows for each KV head: m, l (H*M), a (H*M*hd), and a2
// (H*M*vw): the part of the weighted value sum kept in the value codec's inner basis.
struct State {
  std::vector<float> m, l, a, a2;
  void reset(int64_t rows, int64_t hd, int64_t vw) {
    m.assign(size_t(rows), kNegInf);
    l.assign(size_t(rows), 0.0f);
    a.assign(size_t(rows * hd), 0.0f);
    a2.assign(size_t(rows * vw), 0.0f);
  }
};

struct Ctx {
  const KvShape& shape;
  const KvRope& rope;
  int layer;
  const KvAttention& a;
  const int32_t* qpos;
  std::span<const KvSegment> segs;
  int64_t H, G, hd, C, window;
  // Few queries (decode): per KV head g, (n*G, hd) scaled queries, row i*G + hh. Many queries
  // (prefill) pack each block's queries in the thread's scratch instead (Scratch::q), so the
  // n x Q floats of a whole step are never copied at once.
  std::vector<float> qpack;
  // Inner bases (few queries only): the key / value codec whose inner basis attention uses
  // (null: decode rows), and per KV head g the first channel of the inner groups its slice
  // touches (kc0[g], vc0[g]; kw, vw channels from there, equal for every head). qin holds the
  // queries of head g in the keys' inner basis: rows (g*n*G + i*G + hh), kw wide.
  const Codec* kin = nullptr;
  const Codec* vin = nullptr;
  std::vector<int64_t> kc0, vc0;
  int64_t kw = 0, vw = 0;
  std::vector<float> qin;
  // Block path (few queries, AQUAKV_ATTN_QBLOCK): qb holds the queries of head g quantized to
  // int8 blocks, rows (g*n*G + i*G + hh), hd/32 blocks each (empty: no coded keys read as blocks).
  // qb_rotated: the blocks read are rotated ones (q8_0r/q4_0r), scored against the inner-basis
  // queries qin; else plain ones, scored against qpack.
  bool qblock = false, qb_rotated = false;
  std::vector<AttnQBlock> qb;
  // Table path (few queries, AQUAKV_ATTN_LUT; kin a HIGGS 2x16 codec whose group is exactly the
  // kw channels a head reads): per query row of qin (same row order), lut_p pairs of byte tables
  // (lut_tab), delta and bias; lut_scale0 / lut_code0 [g]: byte offsets of head g's group scale and
  // codes within a coded row; lut_mult = 1/sqrt(group) (the decode's factor).
  bool lut = false;
  int64_t lut_p = 0;
  float lut_mult = 0;
  std::vector<uint8_t> lut_tab;
  std::vector<float> lut_delta, lut_bias;
  std::vector<int64_t> lut_scale0, lut_code0;
};

// Channels [c0, c0 + w) of the inner groups (size grp) that head g's slice [g*hd, (g+1)*hd)
// touches; false when the width differs between heads (then the inner basis is not used).
bool inner_ranges(int64_t grp, int64_t H, int64_t hd, std::vector<int64_t>& c0, int64_t& w) {
  c0.assign(size_t(H), 0);
  w = 0;
  for (int64_t g = 0; g < H; ++g) {
    const int64_t a = g * hd / grp * grp, b = ((g + 1) * hd + grp - 1) / grp * grp;
    if (g > 0 && b - a != w) return false;
    c0[size_t(g)] = a;
    w = b - a;
  }
  return true;
}

// Sets up the inner-basis path for the coded segments (all must share their codecs; keys need
// to be stored rotated) and turns the queries: q_pad (head g's slice of a zero row) -> T^T q_pad.
void setup_inner(Ctx& c) {
  const KvSegment* coded = nullptr;
  for (const KvSegment& sg : c.segs) {
    if (!sg.k_codec) continue;
    if (coded && (sg.k_codec != coded->k_codec || sg.v_codec != coded->v_codec || sg.k_roped != coded->k_roped)) return;
    coded = &sg;
  }
  if (!coded) return;
  if (coded->k_roped && coded->k_codec->inner_group() > 0 && inner_ranges(coded->k_codec->inner_group(), c.H, c.hd, c.kc0, c.kw))
    c.kin = coded->k_codec;
  if (coded->v_codec->inner_group() > 0 && inner_ranges(coded->v_codec->inner_group(), c.H, c.hd, c.vc0, c.vw))
    c.vin = coded->v_codec;
  if (!c.kin) return;
  const int64_t rows = c.a.n * c.G;
  std::vector<float> pad(size_t(c.C));
  c.qin.resize(size_t(c.H * rows * c.kw));
  for (int64_t g = 0; g < c.H; ++g)
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(pad.begin(), pad.end(), 0.0f);
      std::copy_n(c.qpack.data() + (g * rows + r) * c.hd, c.hd, pad.data() + g * c.hd);
      c.kin->transpose_to_inner(pad.data(), 1);
      std::copy_n(pad.data() + c.kc0[size_t(g)], c.kw, c.qin.data() + (g * rows + r) * c.kw);
    }
}

// Quantizes the step's queries to int8 blocks once when some coded segment stores q8_0/q4_0 keys
// after RoPE: the packed queries for plain blocks, the inner-basis queries (qin, turned by R per
// head) for rotated blocks, which need the inner path with groups of one head (setup_inner).
void setup_qblock(Ctx& c) {
  c.qblock = attend_qblock_enabled() && c.hd % 32 == 0;
  if (!c.qblock) return;
  bool plain = false, rotated = false;
  for (const KvSegment& sg : c.segs) {
    GgmlType type;
    bool rot;
    if (sg.k_codec && sg.k_roped && qblock_type(sg.k_codec, &type, &rot)) (rot ? rotated : plain) = true;
  }
  if (rotated) {
    bool per_head = c.kin != nullptr && c.kw == c.hd;
    for (int64_t g = 0; per_head && g < c.H; ++g) per_head = c.kc0[size_t(g)] == g * c.hd;
    rotated = per_head;
  }
  if (plain == rotated) return;  // none, or both kinds in one layer (not a layout formats make)
  c.qb_rotated = rotated;
  const int64_t rows = c.H * c.a.n * c.G, nb = c.hd / 32;
  std::vector<float>& q = rotated ? c.qin : c.qpack;
  c.qb.resize(size_t(rows * nb));
  attn_quantize_qblocks(q.data(), rows, c.hd, c.qb.data());
  // Every row of the step meets the same query: the rows not read as blocks (the step's own
  // rows, still exact in the buffer; sinks) are scored against the rounded query z e too, so
  // the step is attention with one query, the int8-block one (the reference on that query
  // gives the same output up to float rounding). Rotated: qpack <- R (z e), R = T per head.
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const AttnQBlock& qb = c.qb[size_t(r * nb + b)];
      float* dst = q.data() + r * c.hd + 32 * b;
      for (int i = 0; i < 32; ++i) dst[i] = float(qb.q[i]) * qb.d;
    }
  if (!rotated) return;
  const int64_t per_head = c.a.n * c.G;
  std::vector<float> pad(size_t(c.C));
  for (int64_t g = 0; g < c.H; ++g)
    for (int64_t r = 0; r < per_head; ++r) {
      std::fill(pad.begin(), pad.end(), 0.0f);
      std::copy_n(c.qin.data() + (g * per_head + r) * c.hd, c.hd, pad.data() + g * c.hd);
      c.kin->inner_to_rows(pad.data(), 1);
      std::copy_n(pad.data() + g * c.hd, c.hd, c.qpack.data() + (g * per_head + r) * c.hd);
    }
}

// Builds the step's key tables when the coded keys are HIGGS 2x16 codes read in their inner basis
// with one group per head's span (after setup_inner).
void setup_lut(Ctx& c) {
  if (lut_mode() == 0 || c.kin == nullptr) return;
  const auto* h = dynamic_cast<const HiggsCodec*>(c.kin);
  if (h == nullptr || h->grid().d != 2 || h->grid().n != 16 || h->code_bits() != 4) return;
  const int64_t grp = h->group(), P = c.kw / 2;
  if (c.kw != grp || !attn_lut_supported(P)) return;
  const int64_t ng = c.C / grp, rows = c.H * c.a.n * c.G;
  c.lut = true;
  c.lut_p = P;
  c.lut_mult = float(1.0 / std::sqrt(double(grp)));
  c.lut_scale0.resize(size_t(c.H));
  c.lut_code0.resize(size_t(c.H));
  for (int64_t g = 0; g < c.H; ++g) {
    const int64_t gi = c.kc0[size_t(g)] / grp;
    c.lut_scale0[size_t(g)] = 2 * gi;
    c.lut_code0[size_t(g)] = 2 * ng + gi * (grp / 4);
  }
  c.lut_tab.resize(size_t(rows * attn_lut_row_bytes(P)));
  c.lut_delta.resize(size_t(rows));
  c.lut_bias.resize(size_t(rows));
  attn_lut_build(c.qin.data(), rows, P, h->grid().points.data(), c.lut_tab.data(), c.lut_delta.data(),
                 c.lut_bias.data());
}

bool visible(int32_t kp, int32_t qp, int64_t window) {
  return kp <= qp && (window == 0 || int64_t(kp) > int64_t(qp) - window);
}

// Per-thread tile buffers; q: one block's packed queries (prefill).
struct Scratch {
  std::vector<float> k, v, s, m_old, q;
};

// Queries [i0, i1) packed per KV head, scale folded in: head g's rows (i - i0)*G + hh from
// dst + g*(i1 - i0)*G*hd.
void pack_queries(const Ctx& c, int64_t i0, int64_t i1, float* dst) {
  const int64_t Q = int64_t(c.a.n_heads) * c.hd, m = i1 - i0;
  for (int64_t g = 0; g < c.H; ++g)
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t hh = 0; hh < c.G; ++hh) {
        const float* src = c.a.q + i * Q + (g * c.G + hh) * c.hd;
        float* out = dst + ((g * m + i - i0) * c.G + hh) * c.hd;
        for (int64_t d = 0; d < c.hd; ++d) out[d] = src[d] * c.a.scale;
      }
}

// Processes one tile for queries [i0, i1) (all KV heads), updating `st`, which holds exactly
// those queries: head g's st_rows = (i1 - i0) * G rows from g * st_rows. qp: those queries
// packed (pack_queries(c, i0, i1, qp)).
void tile_queries(const Ctx& c, const Tile& t, int64_t i0, int64_t i1, const float* qp, State& st,
                  int64_t st_rows, Scratch& sc) {
  const KvSegment& sg = c.segs[size_t(t.seg)];
  const int64_t rows = t.r1 - t.r0;
  const int32_t* pos = sg.pos + t.r0;
  // Whole-tile visibility for this query range (positions ascend within a segment).
  int32_t qmin = c.qpos[i0], qmax = c.qpos[i0];
  for (int64_t i = i0; i < i1; ++i) { qmin = std::min(qmin, c.qpos[i]); qmax = std::max(qmax, c.qpos[i]); }
  if (pos[0] > qmax) return;
  if (c.window > 0 && int64_t(pos[rows - 1]) <= int64_t(qmin) - c.window) return;
  const bool need_mask = pos[rows - 1] > qmin || (c.window > 0 && int64_t(pos[0]) <= int64_t(qmax) - c.window);

  const int64_t Mq = (i1 - i0) * c.G;
  const bool gemm = Mq >= 16;
  // Keys/values as rows the kernels read: f16 in place when they need no RoPE and few queries
  // read them (decode); inner-basis rows of coded segments (decode); else an f32 tile (decoded,
  // converted and/or rotated).
  const bool coded = sg.k_codec != nullptr;
  const bool kin = coded && !gemm && c.kin != nullptr;
  const bool klut = kin && c.lut && sg.k_codec == c.kin;  // keys scored from the codes by tables
  const bool vin = coded && !gemm && c.vin != nullptr;
  // q8_0/q4_0 rows read as blocks (decode): keys scored on the codes, values summed from them.
  // Rotated blocks (q8_0r/q4_0r) take this path in their inner basis (kin / vin, one head per
  // group): the scores are then against qin's blocks, the value sums go to a2.
  GgmlType kbt = GgmlType::F32, vbt = GgmlType::F32;
  bool krot = false, vrot = false;
  const bool kq = coded && !gemm && !c.qb.empty() && sg.k_roped && qblock_type(sg.k_codec, &kbt, &krot) &&
                  krot == c.qb_rotated && (!krot || kin);
  bool vq = coded && !gemm && c.qblock && qblock_type(sg.v_codec, &vbt, &vrot) && (!vrot || vin);
  if (vq && vrot) {
    for (int64_t g = 0; vq && g < c.H; ++g) vq = c.vw == c.hd && c.vc0[size_t(g)] == g * c.hd;
  }
  const void* K;
  const void* V;
  int64_t stride, vstride = -1;  // vstride: the values' row stride when it differs
  bool f16 = false;
  if (!coded && sg.dtype == KvDtype::F32 && sg.k_roped) {
    K = static_cast<const float*>(sg.k) + t.r0 * sg.stride;
    V = static_cast<const float*>(sg.v) + t.r0 * sg.stride;
    stride = sg.stride;
  } else if (!coded && sg.dtype == KvDtype::F32) {
    // f32 keys before RoPE (AQUA-KV's rebuilt rows): only the keys are copied and rotated, the
    // values are read in place.
    sc.k.resize(size_t(rows * c.C));
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(static_cast<const float*>(sg.k) + (t.r0 + r) * sg.stride, c.C, sc.k.data() + r * c.C);
    if (c.rope.enabled(c.layer)) c.rope.rotate_rows(c.layer, sc.k.data(), rows, pos);
    K = sc.k.data();
    V = static_cast<const float*>(sg.v) + t.r0 * sg.stride;
    stride = c.C;
    vstride = sg.stride;
  } else if (!coded && sg.dtype == KvDtype::F16 && sg.k_roped && !gemm) {
    K = static_cast<const uint16_t*>(sg.k) + t.r0 * sg.stride;
    V = static_cast<const uint16_t*>(sg.v) + t.r0 * sg.stride;
    stride = sg.stride;
    f16 = true;
  } else {
    if (!kq && !klut) sc.k.resize(size_t(rows * c.C));
    if (!vq) sc.v.resize(size_t(rows * c.C));
    K = sc.k.data();
    V = sc.v.data();
    stride = c.C;
    if (coded) {
      const uint8_t* kd = sg.k_codes + sg.k_codec->encoded_bytes(t.r0);
      const uint8_t* vd = sg.v_codes + sg.v_codec->encoded_bytes(t.r0);
      if (kq || klut) K = kd;
      else if (kin) sg.k_codec->decode_inner(kd, rows, sc.k.data());
      else sg.k_codec->decode(kd, rows, sc.k.data());
      if (vq) V = vd;
      else if (vin) sg.v_codec->decode_inner(vd, rows, sc.v.data());
      else sg.v_codec->decode(vd, rows, sc.v.data());
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t src = (t.r0 + r) * sg.stride;
        if (sg.dtype == KvDtype::F32) {
          std::copy_n(static_cast<const float*>(sg.k) + src, c.C, sc.k.data() + r * c.C);
          std::copy_n(static_cast<const float*>(sg.v) + src, c.C, sc.v.data() + r * c.C);
        } else {
          dequantize_row(GgmlType::F16, static_cast<const uint16_t*>(sg.k) + src, sc.k.data() + r * c.C, c.C);
          dequantize_row(GgmlType::F16, static_cast<const uint16_t*>(sg.v) + src, sc.v.data() + r * c.C, c.C);
        }
      }
    }
    if (!sg.k_roped && c.rope.enabled(c.layer)) c.rope.rotate_rows(c.layer, sc.k.data(), rows, pos);
  }
  if (vstride < 0) vstride = stride;

  // Scores of a group of heads' rows (head g's Mq rows at (g - g0)*Mq), one masked online update
  // over them, then their value sums. In an inner basis whose groups span every head (kc0/vc0
  // equal for all heads), one call covers all H*Mq rows: each key/value row is read once for
  // every query head, so the group is all heads; otherwise it is one head, and only one head's
  // scores are held at once (a prefill tile: Mq x rows floats, 0.375 MiB for SmolLM2, instead
  // of H times that). Every row's arithmetic is the same either way: the kernels work row by
  // row, and the per-head calls are the ones an all-heads pass makes.
  const int64_t qrows = c.a.n * c.G;
  AQUAKV_CHECK(st_rows == Mq);
  const bool k_shared = !kq && !klut && kin && c.kc0.front() == c.kc0.back() && i0 == 0 && i1 == c.a.n;
  const bool v_shared = !vq && vin && c.vc0.front() == c.vc0.back();
  const int64_t hg = k_shared || v_shared || c.vin ? c.H : 1;  // heads per group
  sc.s.resize(size_t(hg * Mq * rows));
  float* s = sc.s.data();
  for (int64_t g0 = 0; g0 < c.H; g0 += hg) {
    const int64_t GM = hg * Mq;  // score rows of the group; the state's rows from g0 * Mq
    float* m = st.m.data() + g0 * Mq;
    if (k_shared) {
      attn_scores(c.qin.data(), GM, c.kw, static_cast<const float*>(K) + c.kc0[0], rows, stride, s, rows);
    } else {
      for (int64_t g = g0; g < g0 + hg; ++g) {
        float* sg_ = s + (g - g0) * Mq * rows;
        if (klut) {
          const int64_t r0 = g * qrows + i0 * c.G;
          const uint8_t* kd = static_cast<const uint8_t*>(K);
          attn_scores_lut(c.lut_tab.data() + r0 * attn_lut_row_bytes(c.lut_p), c.lut_delta.data() + r0,
                          c.lut_bias.data() + r0, Mq, c.lut_p, kd + c.lut_code0[size_t(g)], kd + c.lut_scale0[size_t(g)],
                          rows, sg.k_codec->block_bytes(), c.lut_mult, sg_, rows);
        } else if (kq) {
          const int64_t nb = c.hd / 32, head = ggml_row_bytes(kbt, c.hd);
          attn_scores_qblock(kbt, c.qb.data() + (g * qrows + i0 * c.G) * nb, Mq, c.hd,
                             static_cast<const uint8_t*>(K) + g * head, rows, sg.k_codec->encoded_bytes(1), sg_, rows);
        } else if (kin) {
          const float* q = c.qin.data() + (g * qrows + i0 * c.G) * c.kw;
          attn_scores(q, Mq, c.kw, static_cast<const float*>(K) + c.kc0[size_t(g)], rows, stride, sg_, rows);
        } else {
          const float* q = qp + g * Mq * c.hd;
          if (f16) attn_scores_f16(q, Mq, c.hd, static_cast<const uint16_t*>(K) + g * c.hd, rows, stride, sg_, rows);
          else attn_scores(q, Mq, c.hd, static_cast<const float*>(K) + g * c.hd, rows, stride, sg_, rows);
        }
      }
    }
    if (need_mask) {
      for (int64_t r = 0; r < GM; ++r) {
        const int32_t qp = c.qpos[i0 + (r % Mq) / c.G];
        for (int64_t j = 0; j < rows; ++j)
          if (!visible(pos[j], qp, c.window)) s[r * rows + j] = kNegInf;
      }
    }
    if (c.vin) sc.m_old.assign(m, m + GM);
    const float* m_old = sc.m_old.data();
    attn_online_update(s, GM, rows, rows, m, st.l.data() + g0 * Mq, st.a.data() + g0 * Mq * c.hd, c.hd);
    if (c.vin) {
      // The inner part of the sum takes the same rescaling the kernel applied to `a`, on every
      // tile (exact tiles too): alpha = e^(m_old - m) (0 from an empty state; 1 while nothing is
      // visible).
      for (int64_t r = 0; r < GM; ++r) {
        if (m[r] == kNegInf || m_old[r] == m[r]) continue;
        const float alpha = m_old[r] == kNegInf ? 0.0f : std::exp(m_old[r] - m[r]);
        for (int64_t d = 0; d < c.vw; ++d) st.a2[size_t((g0 * Mq + r) * c.vw + d)] *= alpha;
      }
    }
    if (v_shared) {
      attn_accum(s, GM, rows, rows, static_cast<const float*>(V) + c.vc0[0], vstride, c.vw, st.a2.data());
      continue;
    }
    for (int64_t g = g0; g < g0 + hg; ++g) {
      const float* p = s + (g - g0) * Mq * rows;
      if (vq) {
        float* acc = vrot ? st.a2.data() + g * Mq * c.vw : st.a.data() + g * Mq * c.hd;
        attn_accum_qblock(vbt, p, Mq, rows, rows, static_cast<const uint8_t*>(V) + g * ggml_row_bytes(vbt, c.hd),
                          sg.v_codec->encoded_bytes(1), c.hd, acc);
      } else if (vin) {
        attn_accum(p, Mq, rows, rows, static_cast<const float*>(V) + c.vc0[size_t(g)], vstride, c.vw,
                   st.a2.data() + g * Mq * c.vw);
      } else if (f16) {
        attn_accum_f16(p, Mq, rows, rows, static_cast<const uint16_t*>(V) + g * c.hd, vstride, c.hd, st.a.data() + g * Mq * c.hd);
      } else {
        attn_accum(p, Mq, rows, rows, static_cast<const float*>(V) + g * c.hd, vstride, c.hd, st.a.data() + g * Mq * c.hd);
      }
    }
  }
}

// out rows of queries [base, base + rows/G) from the state: (a + head slice of T a2) / l.
void write_out(const Ctx& c, const State& st, int64_t base, int64_t nq) {
  const int64_t Q = int64_t(c.a.n_heads) * c.hd, st_rows = nq * c.G;
  std::vector<float> row(c.vin ? size_t(c.C) : 0);
  for (int64_t g = 0; g < c.H; ++g)
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t hh = 0; hh < c.G; ++hh) {
        const int64_t r = g * st_rows + i * c.G + hh;
        const float inv = st.l[size_t(r)] > 0 ? 1.0f / st.l[size_t(r)] : 0.0f;
        float* o = c.a.out + (base + i) * Q + (g * c.G + hh) * c.hd;
        for (int64_t d = 0; d < c.hd; ++d) o[d] = st.a[size_t(r * c.hd + d)];
        if (c.vin) {
          std::fill(row.begin(), row.end(), 0.0f);
          std::copy_n(st.a2.data() + r * c.vw, c.vw, row.data() + c.vc0[size_t(g)]);
          c.vin->inner_to_rows(row.data(), 1);
          for (int64_t d = 0; d < c.hd; ++d) o[d] += row[size_t(g * c.hd + d)];
        }
        for (int64_t d = 0; d < c.hd; ++d) o[d] *= inv;
      }
}

// Merges state `b` into `a` (rows of the same queries over disjoint tiles).
void merge_states(const Ctx& c, State& a, const State& b, int64_t rows) {
  if (c.vin) {
    // The inner part first, with the factors attn_merge is about to use (it updates m).
    for (int64_t r = 0; r < rows; ++r) {
      if (b.m[size_t(r)] == kNegInf) continue;
      const float mx = std::max(a.m[size_t(r)], b.m[size_t(r)]);
      const float x1 = a.m[size_t(r)] == kNegInf ? 0.0f : std::exp(a.m[size_t(r)] - mx);
      const float x2 = std::exp(b.m[size_t(r)] - mx);
      for (int64_t d = 0; d < c.vw; ++d)
        a.a2[size_t(r * c.vw + d)] = a.a2[size_t(r * c.vw + d)] * x1 + b.a2[size_t(r * c.vw + d)] * x2;
    }
  }
  attn_merge(a.m.data(), a.l.data(), a.a.data(), b.m.data(), b.l.data(), b.a.data(), rows, c.hd);
}

// Writes a tile's rows when its segment makes them on demand (KvSegment::produce).
void produce_tile(const Ctx& c, const Tile& t) {
  const KvSegment& sg = c.segs[size_t(t.seg)];
  if (sg.produce) sg.produce(t.r0, t.r1);
}

std::vector<Tile> make_tiles(std::span<const KvSegment> segs, int64_t tile_rows) {
  std::vector<Tile> tiles;
  for (size_t i = 0; i < segs.size(); ++i) {
    const KvSegment& sg = segs[i];
    const int64_t b = std::max<int64_t>(1, sg.block);
    const int64_t step = std::max(b, tile_rows / b * b);
    for (int64_t r0 = 0; r0 < sg.n; r0 += step) tiles.push_back({int(i), r0, std::min(sg.n, r0 + step)});
  }
  return tiles;
}

}  // namespace

bool attend_qblock_enabled() { return qblock_env(); }
bool attend_lut_enabled() { return lut_mode() != 0; }
void set_attend_lut(bool on) { lut_mode() = on ? 1 : 0; }

KvRope::KvRope(const KvShape& shape) : n_kv_heads_(shape.n_kv_heads), head_dim_(shape.head_dim) {
  for (int l = 0; l < shape.n_layers; ++l) {
    const RopeParams& p = shape.rope_of(l);
    int found = -1;
    for (size_t i = 0; i < tables_.size(); ++i) {
      if (same_rope(tables_[i]->params(), p)) found = int(i);
    }
    if (found < 0) {
      found = int(tables_.size());
      tables_.push_back(std::make_unique<RopeTable>(p));
    }
    index_.push_back(found);
  }
}

void append_positions(std::vector<int32_t>& positions, int64_t n_tokens, int64_t n) {
  positions.resize(size_t(n_tokens + n));
  for (int64_t i = 0; i < n; ++i) positions[size_t(n_tokens + i)] = int32_t(n_tokens + i);
}

void KvRope::ensure(int64_t n_pos) {
  for (auto& t : tables_) if (t->params().n_rot > 0) t->ensure(n_pos);
}

void KvRope::rotate(int layer, float* row, int64_t pos) const {
  const RopeTable& t = table(layer);
  if (t.params().n_rot > 0) rope_row(t, row, n_kv_heads_, head_dim_, pos);
}

void KvRope::rotate_rows(int layer, float* x, int64_t rows, const int32_t* pos) const {
  const RopeTable& t = table(layer);
  if (t.params().n_rot > 0) rope_rows(t, x, rows, int64_t(n_kv_heads_) * head_dim_, pos, n_kv_heads_, head_dim_);
}

void KvRope::unrotate(int layer, float* row, int64_t pos) const {
  const RopeTable& t = table(layer);
  if (t.params().n_rot > 0) rope_row_inverse(t, row, n_kv_heads_, head_dim_, pos);
}

void attend_segments(const KvShape& shape, const KvRope& rope, int layer, const KvAttention& a,
                     const int32_t* qpos, std::span<const KvSegment> segs) {
  const int64_t n = a.n;
  if (n <= 0) return;
  if (a.n_heads <= 0 || a.n_heads % shape.n_kv_heads != 0)
    fail("attention: {} query heads do not group over {} KV heads", a.n_heads, shape.n_kv_heads);
  Ctx c{shape, rope, layer, a, qpos, segs, shape.n_kv_heads, a.n_heads / shape.n_kv_heads,
        shape.head_dim, shape.width(), shape.window_of(layer), {}, nullptr, nullptr, {}, {}, 0, 0, {}, false, false, {}, false, 0, 0.0f, {}, {}, {}, {}, {}};
  const bool many = n >= 2 * kQueryBlock;
  if (!many) {
    c.qpack.resize(size_t(c.H * n * c.G * c.hd));
    pack_queries(c, 0, n, c.qpack.data());
  }
  if (!many && n * c.G < 16) {  // the inner bases and the block path serve the few-query kernels
    setup_inner(c);
    setup_qblock(c);  // after: rotated blocks round the inner-basis queries
    setup_lut(c);
  }
  // Prefill: larger tiles (fewer, larger sgemm calls); decode: kTileRows, the unit of the split
  // over threads.
  const std::vector<Tile> tiles = make_tiles(segs, many ? 4 * kTileRows : kTileRows);

  with_single_threaded_blas([&] {
    if (many) {
      // Rows made on demand: all of them before any query block reads them.
      parallel_for(int64_t(tiles.size()), [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) produce_tile(c, tiles[size_t(t)]);
      });
      // Many queries: one work item per block of queries over all tiles; no merge. Items are
      // ordered small/large alternately so that the contiguous split over threads balances the
      // causal triangle.
      const int64_t nb = (n + kQueryBlock - 1) / kQueryBlock;
      parallel_for(nb, [&](int64_t b0, int64_t b1) {
        thread_local Scratch sc;
        State st;
        for (int64_t k = b0; k < b1; ++k) {
          const int64_t qb = k % 2 == 0 ? k / 2 : nb - 1 - k / 2;
          const int64_t i0 = qb * kQueryBlock, i1 = std::min(n, i0 + kQueryBlock);
          const int64_t rows = (i1 - i0) * c.G;
          st.reset(c.H * rows, c.hd, 0);
          sc.q.resize(size_t(c.H * rows * c.hd));
          pack_queries(c, i0, i1, sc.q.data());
          for (const Tile& t : tiles) tile_queries(c, t, i0, i1, sc.q.data(), st, rows, sc);
          write_out(c, st, i0, i1 - i0);
        }
      });
      return;
    }
    // Few queries (decode): split the tiles over threads, merge the partial states.
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads(), int64_t(tiles.size())));
    const int64_t rows = n * c.G;
    std::vector<State> st(static_cast<size_t>(parts));
    parallel_for(parts, [&](int64_t p0, int64_t p1) {
      thread_local Scratch sc;
      for (int64_t p = p0; p < p1; ++p) {
        State& s = st[size_t(p)];
        s.reset(c.H * rows, c.hd, c.vw);
        const int64_t t0 = int64_t(tiles.size()) * p / parts, t1 = int64_t(tiles.size()) * (p + 1) / parts;
        for (int64_t t = t0; t < t1; ++t) {
          produce_tile(c, tiles[size_t(t)]);  // the tile's rows, then read while in cache
          tile_queries(c, tiles[size_t(t)], 0, n, c.qpack.data(), s, rows, sc);
        }
      }
    });
    for (int64_t p = 1; p < parts; ++p) merge_states(c, st[0], st[size_t(p)], c.H * rows);
    write_out(c, st[0], 0, n);
  });
}

void KvCache::attend(int layer, const KvAttention& a) { attend_reference(*this, layer, a); }

void attend_reference(KvCache& cache, int layer, const KvAttention& a) {
  const KvShape& shape = cache.shape();
  const KvView view = cache.read(layer);
  const int64_t n = a.n, T = view.n_tokens, C = shape.width(), hd = shape.head_dim;
  if (n > T) fail("kv cache {}: attention for {} queries over {} rows", cache.name(), n, T);
  if (a.n_heads <= 0 || a.n_heads % shape.n_kv_heads != 0)
    fail("attention: {} query heads do not group over {} KV heads", a.n_heads, shape.n_kv_heads);
  // Rows as f32, keys rotated.
  std::vector<float> k(size_t(T * C)), v(size_t(T * C));
  KvRope rope(shape);
  rope.ensure(T > 0 ? int64_t(view.pos[T - 1]) + 1 : 1);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < C; ++j) {
      const int64_t i = t * view.row_stride + j;
      k[size_t(t * C + j)] = view.dtype == KvDtype::F32 ? static_cast<const float*>(view.k)[i]
                                                        : fp16_to_fp32(static_cast<const uint16_t*>(view.k)[i]);
      v[size_t(t * C + j)] = view.dtype == KvDtype::F32 ? static_cast<const float*>(view.v)[i]
                                                        : fp16_to_fp32(static_cast<const uint16_t*>(view.v)[i]);
    }
    if (!view.k_roped) rope.rotate(layer, k.data() + t * C, view.pos[t]);
  }
  const int64_t Q = int64_t(a.n_heads) * hd, G = a.n_heads / shape.n_kv_heads;
  const int64_t window = shape.window_of(layer);
  std::vector<double> sc;
  std::vector<int32_t> seen_pos;
  std::vector<float> w;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t qp = view.pos[T - n + i];
    for (int h = 0; h < a.n_heads; ++h) {
      const int64_t g = h / G;
      const float* q = a.q + i * Q + h * hd;
      sc.clear();
      seen_pos.clear();
      double mx = -std::numeric_limits<double>::infinity();
      std::vector<int64_t> rows;
      for (int64_t t = 0; t < T; ++t) {
        if (!visible(view.pos[t], qp, window)) continue;
        double d = 0;
        for (int64_t j = 0; j < hd; ++j) d += double(q[j]) * double(k[size_t(t * C + g * hd + j)]);
        sc.push_back(d * a.scale);
        rows.push_back(t);
        seen_pos.push_back(view.pos[t]);
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (double& x : sc) sum += (x = std::exp(x - mx));
      float* o = a.out + i * Q + h * hd;
      for (int64_t j = 0; j < hd; ++j) {
        double acc = 0;
        for (size_t r = 0; r < rows.size(); ++r) acc += sc[r] * double(v[size_t(rows[r] * C + g * hd + j)]);
        o[j] = rows.empty() ? 0.0f : float(acc / sum);
      }
      if (a.observer != nullptr) {
        w.resize(sc.size());
        for (size_t r = 0; r < sc.size(); ++r) w[r] = float(sc[r] / sum);
        a.observer->on_weights(layer, i, qp, h, seen_pos, w);
      }
    }
  }
}

}  // namespace aquakv
