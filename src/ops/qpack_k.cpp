// The packed layouts of the K-quants Q4_K and Q6_K (ops/qpack.h): packing, unpacking and the
// scalar reference kernel. A K-quant super-block of 256 values is 8 sub-blocks of 32, each
// meeting one 8-bit activation block; the packed form keeps every scale code as a byte per row
// (no 6-bit packing) so the kernel reads 16 rows' scales with one load.
//
// Q4_K, 148 B per row and super-block (16 rows: 2368 B; the GGUF block is 144 B):
//   d[16] f16 | dmin[16] f16 | sc[8][16] u8 | mn[8][16] u8 | codes 4 pairs x 8 chunks x 64 B
//   pair p chunk c, byte 4r+i = GGUF qs[32p + 4c + i] of row r: low nibble = value 4c+i of
//   sub-block 2p, high nibble = value 4c+i of sub-block 2p+1.
//   Per sub-block j: acc = fma(isum, (d*sc_j) * a.d, acc); accm = fma(-(dmin*mn_j), a.s, accm).
// Q5_K, 180 B per row and super-block (GGUF 176): Q4_K's layout, then the fifth bits as 8 x 8
//   64-bit words, word (j, c) bit 4r+i = fifth bit of value 4c+i of sub-block j of row r.
// Q6_K, 210 B per row and super-block (16 rows: 3360 B):
//   d[16] f16 | sc[16][16] i8 | per sub-block s of 32: 4 nibble chunks x 64 B, 2 x 64 B high bits
//   nibble chunk j, byte 4r+i: low nibble = low 4 bits of q(32s+4j+i), high = of q(32s+16+4j+i);
//   code vector u (2j: low nibbles of chunk j, 2j+1: high) has its 2 high bits in high-bit block
//   u/4 at bits 2(u%4) of byte 4r+i. Values 0..15 and 16..31 of the sub-block are two scale
//   groups: acc = fma(isum_h - 32*asum_h, (d*sc_{2s+h}) * a.d, acc), h = 0, 1, where asum_h is
//   the sum of the activation's 16 codes of that half.
#include "qpack_k.h"
#include "qpack_layout.h"

#include <cmath>
#include <cstring>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/fp16.h"
#include "ggml_blocks.h"

namespace aquakv::detail {
namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// Q6_K code i (0..63) of one GGUF super-block, and its inverse.
int q6k_get(const uint8_t* blk, int i) {
  const int h = i / 128, r = i % 128;
  const int lo = (blk[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
  const int hi = (blk[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
  return lo | hi << 4;
}
// Sets code i into a super-block whose ql / qh bytes (the first 192) start zeroed.
inline void q6k_set(uint8_t* blk, int i, int q) {
  const int h = i / 128, r = i % 128;
  blk[64 * h + r % 64] |= uint8_t((q & 0x0f) << (4 * (r / 64)));
  blk[128 + 32 * h + r % 32] |= uint8_t(((q >> 4) & 0x03) << (2 * (r / 32)));
}

// Byte offset of the sub-blocks' codes in a packed Q6_K super-block.
constexpr int64_t kQ6Codes = 288;

// Q5_K's fifth-bit word of sub-block j, chunk c in a packed super-block.
uint64_t fifth_word(const uint8_t* blk, int j, int c) { return load_u64(blk + kQ5KMasks + 64 * j + 8 * c); }

}  // namespace

void qpack_group_k(GgmlType type, const uint8_t* rows, int64_t row_bytes, int64_t cols, uint8_t* group) {
  const int64_t nsb = cols / 256, rb = qpack_k_row_block(type), pb = qpack_k_packed_block(type);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    uint8_t* out = group + sb * kPackRows * pb;
    std::memset(out, 0, size_t(kPackRows * pb));
    for (int64_t r = 0; r < kPackRows; ++r) {
      const uint8_t* src = rows + r * row_bytes + sb * rb;
      if (type != GgmlType::Q6_K) {  // Q4_K, Q5_K
        const int64_t qs = type == GgmlType::Q5_K ? 48 : 16;
        std::memcpy(out + 2 * r, src, 2);
        std::memcpy(out + 32 + 2 * r, src + 2, 2);
        for (int j = 0; j < 8; ++j) {
          int sc, mn;
          ggml::scale_min_k4(src + 4, j, sc, mn);
          out[64 + 16 * j + r] = uint8_t(sc);
          out[192 + 16 * j + r] = uint8_t(mn);
        }
        for (int p = 0; p < 4; ++p) {
          for (int c = 0; c < 8; ++c) std::memcpy(out + 320 + 512 * p + 64 * c + 4 * r, src + qs + 32 * p + 4 * c, 4);
        }
        if (type == GgmlType::Q5_K) {
          for (int j = 0; j < 8; ++j) {
            for (int c = 0; c < 8; ++c) {
              uint64_t w;
              std::memcpy(&w, out + kQ5KMasks + 64 * j + 8 * c, 8);
              for (int i = 0; i < 4; ++i) w |= uint64_t((src[16 + 4 * c + i] >> j) & 1) << (4 * r + i);
              std::memcpy(out + kQ5KMasks + 64 * j + 8 * c, &w, 8);
            }
          }
        }
      } else {  // Q6_K
        std::memcpy(out + 2 * r, src + 208, 2);
        for (int k = 0; k < 16; ++k) out[32 + 16 * k + r] = src[192 + k];
        for (int s = 0; s < 8; ++s) {
          uint8_t* sbk = out + kQ6Codes + 384 * s;
          for (int j = 0; j < 4; ++j) {
            for (int i = 0; i < 4; ++i) {
              const int qa = q6k_get(src, 32 * s + 4 * j + i), qb = q6k_get(src, 32 * s + 16 + 4 * j + i);
              sbk[64 * j + 4 * r + i] = uint8_t((qa & 15) | (qb & 15) << 4);
              const int ua = 2 * j, ub = 2 * j + 1;
              sbk[256 + 64 * (ua / 4) + 4 * r + i] |= uint8_t((qa >> 4) << (2 * (ua % 4)));
              sbk[256 + 64 * (ub / 4) + 4 * r + i] |= uint8_t((qb >> 4) << (2 * (ub % 4)));
            }
          }
        }
      }
    }
  }
}

void qunpack_group_k(GgmlType type, const uint8_t* group, int64_t cols, uint8_t* rows, int64_t row_bytes) {
  const int64_t nsb = cols / 256, rb = qpack_k_row_block(type), pb = qpack_k_packed_block(type);
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const uint8_t* in = group + sb * kPackRows * pb;
    for (int64_t r = 0; r < kPackRows; ++r) {
      uint8_t* dst = rows + r * row_bytes + sb * rb;
      if (type != GgmlType::Q6_K) {  // Q4_K, Q5_K
        const int64_t qs = type == GgmlType::Q5_K ? 48 : 16;
        std::memcpy(dst, in + 2 * r, 2);
        std::memcpy(dst + 2, in + 32 + 2 * r, 2);
        uint8_t* s = dst + 4;  // inverse of ggml::scale_min_k4
        for (int k = 0; k < 4; ++k) {
          const int sc = in[64 + 16 * k + r], mn = in[192 + 16 * k + r];
          const int sc4 = in[64 + 16 * (k + 4) + r], mn4 = in[192 + 16 * (k + 4) + r];
          s[k] = uint8_t(sc | (sc4 >> 4) << 6);
          s[k + 4] = uint8_t(mn | (mn4 >> 4) << 6);
          s[k + 8] = uint8_t((sc4 & 15) | (mn4 & 15) << 4);
        }
        for (int p = 0; p < 4; ++p) {
          for (int c = 0; c < 8; ++c) std::memcpy(dst + qs + 32 * p + 4 * c, in + 320 + 512 * p + 64 * c + 4 * r, 4);
        }
        if (type == GgmlType::Q5_K) {
          for (int k = 0; k < 32; ++k) {
            uint8_t h = 0;
            for (int j = 0; j < 8; ++j) h |= uint8_t(((fifth_word(in, j, k / 4) >> (4 * r + k % 4)) & 1) << j);
            dst[16 + k] = h;
          }
        }
      } else {
        std::memset(dst, 0, 192);  // ql, qh: q6k_set ors the codes in
        std::memcpy(dst + 208, in + 2 * r, 2);
        for (int k = 0; k < 16; ++k) dst[192 + k] = in[32 + 16 * k + r];
        for (int s = 0; s < 8; ++s) {
          const uint8_t* sbk = in + kQ6Codes + 384 * s;
          for (int j = 0; j < 4; ++j) {
            for (int i = 0; i < 4; ++i) {
              const uint8_t nib = sbk[64 * j + 4 * r + i];
              const int ua = 2 * j, ub = 2 * j + 1;
              const int ha = (sbk[256 + 64 * (ua / 4) + 4 * r + i] >> (2 * (ua % 4))) & 3;
              const int hbits = (sbk[256 + 64 * (ub / 4) + 4 * r + i] >> (2 * (ub % 4))) & 3;
              q6k_set(dst, 32 * s + 4 * j + i, (nib & 15) | ha << 4);
              q6k_set(dst, 32 * s + 16 + 4 * j + i, (nib >> 4) | hbits << 4);
            }
          }
        }
      }
    }
  }
}

void qpack_dot_k_ref(GgmlType type, const uint8_t* packed, int64_t cols, int64_t g0, int64_t g1,
                     const Q8Act* x, int64_t n_act, float* out, int64_t out_stride) {
  const int64_t nsb = cols / 256, nb = cols / 32, pb = qpack_k_packed_block(type);
  const int64_t gbytes = kPackRows * nsb * pb;
  for (int64_t grp = g0; grp < g1; ++grp) {
    for (int64_t t = 0; t < n_act; ++t) {
      const Q8Act* a = x + t * nb;
      for (int64_t r = 0; r < kPackRows; ++r) {
        float acc = 0.0f, accm = 0.0f;
        for (int64_t sb = 0; sb < nsb; ++sb) {
          const uint8_t* blk = packed + grp * gbytes + sb * kPackRows * pb;
          const float d = half_at(blk + 2 * r);
          for (int j = 0; j < 8; ++j) {
            const Q8Act& ab = a[8 * sb + j];
            if (type != GgmlType::Q6_K) {  // Q4_K, Q5_K
              int32_t isum = 0;
              for (int c = 0; c < 8; ++c) {
                const uint64_t fifth = type == GgmlType::Q5_K ? fifth_word(blk, j, c) : 0;
                for (int i = 0; i < 4; ++i) {
                  const uint8_t byte = blk[320 + 512 * (j / 2) + 64 * c + 4 * r + i];
                  const int32_t q = ((byte >> (4 * (j % 2))) & 15) | int32_t((fifth >> (4 * r + i)) & 1) << 4;
                  isum += q * ab.q[4 * c + i];
                }
              }
              const float d1 = d * float(blk[64 + 16 * j + r]);
              const float m1 = half_at(blk + 32 + 2 * r) * float(blk[192 + 16 * j + r]);
              acc = std::fma(float(isum), d1 * ab.d, acc);
              accm = std::fma(-m1, ab.s, accm);
            } else {
              const uint8_t* sbk = blk + kQ6Codes + 384 * j;
              for (int h = 0; h < 2; ++h) {
                int32_t isum = 0, asum = 0;
                for (int jj = 0; jj < 4; ++jj) {
                  const int u = 2 * jj + h;
                  for (int i = 0; i < 4; ++i) {
                    const int nib = (sbk[64 * jj + 4 * r + i] >> (4 * h)) & 15;
                    const int hi = (sbk[256 + 64 * (u / 4) + 4 * r + i] >> (2 * (u % 4))) & 3;
                    isum += int32_t(nib | hi << 4) * ab.q[16 * h + 4 * jj + i];
                    asum += ab.q[16 * h + 4 * jj + i];
                  }
                }
                const float d1 = d * float(int8_t(blk[32 + 16 * (2 * j + h) + r]));
                acc = std::fma(float(isum - 32 * asum), d1 * ab.d, acc);
              }
            }
          }
        }
        out[t * out_stride + grp * kPackRows + r] = acc + accm;
      }
    }
  }
}

}  // namespace aquakv::detail
