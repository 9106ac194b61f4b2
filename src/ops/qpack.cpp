// Packing, unpacking and the scalar reference of ops/qpack.h, and the dispatch to the AVX2 and
// AVX-512 kernels.
#include "aquakv/ops/qpack.h"

#include <cmath>
#include <cstring>

#include "ggml_blocks.h"
#include "qpack_k.h"
#include "qpack_layout.h"
#include "aquakv/util/check.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

using detail::load_u32;
using detail::load_u64;

// Per-type geometry of one packed block (16 rows x 32 values).
struct PackGeom {
  int64_t row_block;  // bytes of one GGUF block of one row
  int64_t scale_off;  // offset of d within a GGUF block
  int64_t min_off;    // offset of m within a GGUF block, or -1
  int64_t code_off;   // offset of the codes within a GGUF block
  int64_t qh_off;     // offset of the 32 fifth bits (Q5_*) within a GGUF block, or -1
  int64_t chunks;     // 64-byte code chunks per packed block (4 nibble chunks, 8 byte chunks)
  bool q8;
};

PackGeom geom(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: return {ggml::kQ4_0Bytes, 0, -1, 2, -1, 4, false};
    case GgmlType::Q4_1: return {ggml::kQ4_1Bytes, 0, 2, 4, -1, 4, false};
    case GgmlType::Q5_0: return {ggml::kQ5_0Bytes, 0, -1, 6, 2, 4, false};
    case GgmlType::Q5_1: return {ggml::kQ5_1Bytes, 0, 2, 8, 4, 4, false};
    case GgmlType::Q8_0: return {ggml::kQ8_0Bytes, 0, -1, 2, -1, 8, true};
    default: AQUAKV_CHECK(false, "qpack: type without a packed layout");
  }
  return {};
}

// Header bytes of a packed block: d[16] f16, then m[16] f16 (Q4_1, Q5_1), then the fifth-bit
// masks (Q5_*): 8 words of 64 bits, word 2j for the low nibbles of chunk j and 2j+1 for its high
// nibbles, bit 4r+i = the fifth bit of that code of row r.
int64_t mask_offset(const PackGeom& g) { return g.min_off >= 0 ? 64 : 32; }
int64_t header_bytes(const PackGeom& g) { return mask_offset(g) + (g.qh_off >= 0 ? 64 : 0); }



float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

}  // namespace

bool qpack_supported(GgmlType type) {
  return type == GgmlType::Q4_0 || type == GgmlType::Q4_1 || type == GgmlType::Q5_0 ||
         type == GgmlType::Q5_1 || type == GgmlType::Q8_0 || detail::qpack_is_k(type);
}

int64_t qpack_group_bytes(GgmlType type, int64_t cols) {
  if (detail::qpack_is_k(type)) return kPackRows * (cols / 256) * detail::qpack_k_packed_block(type);
  return kPackRows * (cols / 32) * geom(type).row_block;
}

void qpack_group(GgmlType type, const uint8_t* rows, int64_t row_bytes, int64_t cols, uint8_t* group) {
  if (detail::qpack_is_k(type)) return detail::qpack_group_k(type, rows, row_bytes, cols, group);
  const PackGeom g = geom(type);
  const int64_t nb = cols / 32, hb = header_bytes(g);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* out = group + b * kPackRows * g.row_block;
    if (g.qh_off >= 0) {
      uint64_t words[8] = {};
      for (int64_t r = 0; r < kPackRows; ++r) {
        const uint32_t qh = load_u32(rows + r * row_bytes + b * g.row_block + g.qh_off);
        for (int j = 0; j < 4; ++j) {  // bits 4j..4j+3 (16+4j.. for hi) become row r's nibble
          words[2 * j] |= uint64_t((qh >> (4 * j)) & 15u) << (4 * r);
          words[2 * j + 1] |= uint64_t((qh >> (16 + 4 * j)) & 15u) << (4 * r);
        }
      }
      std::memcpy(out + mask_offset(g), words, 64);
    }
    for (int64_t r = 0; r < kPackRows; ++r) {
      const uint8_t* src = rows + r * row_bytes + b * g.row_block;
      std::memcpy(out + 2 * r, src + g.scale_off, 2);
      if (g.min_off >= 0) std::memcpy(out + 32 + 2 * r, src + g.min_off, 2);
      const uint32_t flip = g.q8 ? 0x80808080u : 0u;  // Q8_0: code + 128 in every byte
      for (int64_t j = 0; j < g.chunks; ++j) {
        const uint32_t w = load_u32(src + g.code_off + 4 * j) ^ flip;
        std::memcpy(out + hb + 64 * j + 4 * r, &w, 4);
      }
    }
  }
}

void qunpack_group(GgmlType type, const uint8_t* group, int64_t cols, uint8_t* rows, int64_t row_bytes) {
  if (detail::qpack_is_k(type)) return detail::qunpack_group_k(type, group, cols, rows, row_bytes);
  const PackGeom g = geom(type);
  const int64_t nb = cols / 32, hb = header_bytes(g);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* in = group + b * kPackRows * g.row_block;
    for (int64_t r = 0; r < kPackRows; ++r) {
      uint8_t* dst = rows + r * row_bytes + b * g.row_block;
      if (g.qh_off >= 0) {
        uint32_t qh = 0;
        for (int j = 0; j < 4; ++j) {
          const uint64_t lo = load_u64(in + mask_offset(g) + 16 * j), hi = load_u64(in + mask_offset(g) + 16 * j + 8);
          // row r's 4 bits of a mask word are one nibble: bits 4j..4j+3 (16+4j.. for hi) of qh
          qh |= uint32_t((lo >> (4 * r)) & 15u) << (4 * j);
          qh |= uint32_t((hi >> (4 * r)) & 15u) << (16 + 4 * j);
        }
        std::memcpy(dst + g.qh_off, &qh, 4);
      }
      std::memcpy(dst + g.scale_off, in + 2 * r, 2);
      if (g.min_off >= 0) std::memcpy(dst + g.min_off, in + 32 + 2 * r, 2);
      for (int64_t j = 0; j < g.chunks; ++j) {
        uint8_t* c = dst + g.code_off + 4 * j;
        std::memcpy(c, in + hb + 64 * j + 4 * r, 4);
        if (g.q8) {
          for (int i = 0; i < 4; ++i) c[i] ^= 0x80;
        }
      }
    }
  }
}

// The reference: the arithmetic of ops/qpack.h spelled out per row, fma by std::fma so that
// it rounds as the SIMD kernels' fused multiply-adds do.
void qpack_dot_ref(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                   const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  if (detail::qpack_is_k(type)) return detail::qpack_dot_k_ref(type, packed, cols, g0, g1, x, n_act, out, out_stride);
  const PackGeom g = geom(type);
  const int64_t nb = cols / 32, hb = header_bytes(g), gbytes = qpack_group_bytes(type, cols);
  for (int64_t grp = g0; grp < g1; ++grp) {
    const uint8_t* base = packed + grp * gbytes;
    for (int64_t t = 0; t < n_act; ++t) {
      const Q8Act* a = x + t * nb;
      for (int64_t r = 0; r < kPackRows; ++r) {
        float acc = 0.0f, accm = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* blk = base + b * kPackRows * g.row_block;
          int32_t isum = 0;
          for (int64_t j = 0; j < g.chunks; ++j) {
            const uint8_t* c = blk + hb + 64 * j + 4 * r;
            const uint64_t mlo = g.qh_off >= 0 ? load_u64(blk + mask_offset(g) + 16 * j) : 0;
            const uint64_t mhi = g.qh_off >= 0 ? load_u64(blk + mask_offset(g) + 16 * j + 8) : 0;
            for (int i = 0; i < 4; ++i) {
              if (g.q8) {
                isum += (int32_t(c[i]) - 128) * a[b].q[4 * j + i];
              } else {
                const int32_t lo = int32_t(c[i] & 15) | int32_t((mlo >> (4 * r + i)) & 1u) << 4;
                const int32_t hi = int32_t(c[i] >> 4) | int32_t((mhi >> (4 * r + i)) & 1u) << 4;
                isum += lo * a[b].q[4 * j + i] + hi * a[b].q[16 + 4 * j + i];
              }
            }
          }
          const float dw = half_at(blk + 2 * r);
          acc = std::fma(float(isum), dw * a[b].d, acc);
          if (g.min_off >= 0) accm = std::fma(half_at(blk + 32 + 2 * r), a[b].s, accm);  // Q4_1, Q5_1
          if (type == GgmlType::Q4_0) accm = std::fma(dw * -8.0f, a[b].s, accm);
          if (type == GgmlType::Q5_0) accm = std::fma(dw * -16.0f, a[b].s, accm);
        }
        out[t * out_stride + grp * kPackRows + r] = acc + accm;
      }
    }
  }
}

void qpack_dot(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
               const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  const bool k = detail::qpack_is_k(type);
  if (simd_at_least(SimdLevel::kAvx512)) {
    return k ? detail::qpack_dot_k_avx512(type, packed, cols, g0, g1, x, n_act, out, out_stride)
             : detail::qpack_dot_avx512(type, packed, cols, g0, g1, x, n_act, out, out_stride);
  }
  if (simd_at_least(SimdLevel::kAvx2)) {
    return k ? detail::qpack_dot_k_avx2(type, packed, cols, g0, g1, x, n_act, out, out_stride)
             : detail::qpack_dot_avx2(type, packed, cols, g0, g1, x, n_act, out, out_stride);
  }
  qpack_dot_ref(type, packed, cols, g0, g1, x, n_act, out, out_stride);
}

}  // namespace aquakv
