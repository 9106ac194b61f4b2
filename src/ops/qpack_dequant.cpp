// Dequantization straight from the packed groups of ops/qpack.h: the scalar reference and the
// dispatch to the AVX2 / AVX-512 kernels (qpack_dequant_avx2.cpp, qpack_dequant_avx512.cpp).
//
// Why: prefill multiplies by f32 tiles of the weights (ops/matmul.cpp); unpacking a group back to
// GGUF rows and then decoding those rows wrote and re-read every byte of the group once more and
// spent its time on the bit shuffles of the Q5 fifth bits and Q6_K's split codes. Here each
// value is read where the packed layout put it and decoded once.
//
// Every value is the format's own float formula (ggml_dequant_ref.cpp), in the same order:
//   Q4_0 d*(q-8) | Q4_1 d*q + m | Q5_0 d*(q-16) | Q5_1 d*q + m | Q8_0 (q-128 stored +128)*d
//   Q4_K, Q5_K (d*sc_j)*q - dmin*mn_j | Q6_K (d*sc_16-group)*(q-32)
// with d, m read from f16 and the scale products formed in f32 first. The products are exact
// in f32 (an f16 scale has 11 significant bits, codes at most 8), so only the add, or Q6_K's
// second product, rounds; that is why the SIMD kernels can match these bits exactly.
#include <cstring>

#include "aquakv/ops/qpack.h"
#include "aquakv/util/check.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "qpack_k.h"
#include "qpack_layout.h"

// Multiply and add stay two roundings, as in the format's definition.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv {
namespace {

using detail::load_u64;
using detail::PackGeo;

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// The 32-value block types: row r, value v of block b sits in chunk (v % 16) / 4 (Q8_0: v / 4),
// byte 4r + v % 4, low nibble for v < 16 and high for v >= 16; Q5_*'s fifth bit in mask word
// 2 * chunk (+1 for v >= 16), bit 4r + v % 4.
template <GgmlType T>
void dequant_32(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  using G = PackGeo<T>;
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* blk = group + b * kPackRows * G::kRowBlock;
    for (int64_t r = 0; r < kPackRows; ++r) {
      const float d = half_at(blk + 2 * r);
      float* o = out + r * ld + 32 * b;
      for (int v = 0; v < 32; ++v) {
        const int hi = v / 16, j = (v % 16) / 4, i = v % 4;
        if constexpr (G::kQ8) {
          o[v] = float(int(blk[G::kHdr + 64 * (v / 4) + 4 * r + i]) - 128) * d;
          continue;
        }
        int q = (blk[G::kHdr + 64 * j + 4 * r + i] >> (4 * hi)) & 15;
        if constexpr (G::kQ5) q |= int((load_u64(blk + G::kMaskOff + 16 * j + 8 * hi) >> (4 * r + i)) & 1u) << 4;
        if constexpr (G::kMin) {
          o[v] = d * float(q) + half_at(blk + 32 + 2 * r);
        } else {
          o[v] = d * float(q + int(G::kOffset));
        }
      }
    }
  }
}

// Q4_K / Q5_K (layout in qpack_k.cpp): value k of sub-block j of row r is nibble j % 2 of byte
// 4r + k % 4 of chunk k / 4 of pair j / 2; Q5_K's fifth bit is bit 4r + k % 4 of word (j, k / 4).
void dequant_q45k(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = detail::qpack_k_packed_block(type);
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    for (int64_t r = 0; r < kPackRows; ++r) {
      const float d = half_at(blk + 2 * r), dmin = half_at(blk + 32 + 2 * r);
      for (int j = 0; j < 8; ++j) {
        const float d1 = d * float(blk[64 + 16 * j + r]), m1 = dmin * float(blk[192 + 16 * j + r]);
        float* o = out + r * ld + 256 * sb + 32 * j;
        for (int k = 0; k < 32; ++k) {
          const int c = k / 4, i = k % 4;
          int q = (blk[320 + 512 * (j / 2) + 64 * c + 4 * r + i] >> (4 * (j % 2))) & 15;
          if (type == GgmlType::Q5_K) q |= int((load_u64(blk + detail::kQ5KMasks + 64 * j + 8 * c) >> (4 * r + i)) & 1u) << 4;
          o[k] = d1 * float(q) - m1;
        }
      }
    }
  }
}

// Q6_K (layout in qpack_k.cpp): value k of sub-block s of row r: u = 2 * ((k % 16) / 4) + k / 16;
// low 4 bits = nibble k / 16 of byte 4r + k % 4 of nibble chunk (k % 16) / 4, high 2 bits = bits
// 2 * (u % 4) of byte 4r + k % 4 of high-bit block u / 4; scale sc[2s + k / 16].
void dequant_q6k(const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  const int64_t pb = detail::qpack_k_packed_block(GgmlType::Q6_K);
  for (int64_t sb = 0; sb < cols / 256; ++sb) {
    const uint8_t* blk = group + sb * kPackRows * pb;
    for (int64_t r = 0; r < kPackRows; ++r) {
      const float d = half_at(blk + 2 * r);
      for (int s = 0; s < 8; ++s) {
        const uint8_t* sbk = blk + 288 + 384 * s;
        float* o = out + r * ld + 256 * sb + 32 * s;
        for (int k = 0; k < 32; ++k) {
          const int h = k / 16, jj = (k % 16) / 4, i = k % 4, u = 2 * jj + h;
          const int lo = (sbk[64 * jj + 4 * r + i] >> (4 * h)) & 15;
          const int hb = (sbk[256 + 64 * (u / 4) + 4 * r + i] >> (2 * (u % 4))) & 3;
          o[k] = (d * float(int8_t(blk[32 + 16 * (2 * s + h) + r]))) * float((lo | hb << 4) - 32);
        }
      }
    }
  }
}

}  // namespace

void qpack_dequant_group_ref(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  switch (type) {
    case GgmlType::Q4_0: return dequant_32<GgmlType::Q4_0>(group, cols, out, ld);
    case GgmlType::Q4_1: return dequant_32<GgmlType::Q4_1>(group, cols, out, ld);
    case GgmlType::Q5_0: return dequant_32<GgmlType::Q5_0>(group, cols, out, ld);
    case GgmlType::Q5_1: return dequant_32<GgmlType::Q5_1>(group, cols, out, ld);
    case GgmlType::Q8_0: return dequant_32<GgmlType::Q8_0>(group, cols, out, ld);
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: return dequant_q45k(type, group, cols, out, ld);
    case GgmlType::Q6_K: return dequant_q6k(group, cols, out, ld);
    default: AQUAKV_CHECK(false, "qpack_dequant_group: type without a packed layout");
  }
}

void qpack_dequant_group(GgmlType type, const uint8_t* group, int64_t cols, float* out, int64_t ld) {
  if (simd_at_least(SimdLevel::kAvx512)) return detail::qpack_dequant_group_avx512(type, group, cols, out, ld);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::qpack_dequant_group_avx2(type, group, cols, out, ld);
  qpack_dequant_group_ref(type, group, cols, out, ld);
}

}  // namespace aquakv
