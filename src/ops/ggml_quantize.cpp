// Reference quantizers of the 32-value ggml formats (see ops/ggml_quantize.h for the formulas).
// All arithmetic is float32 in the reference's order: a scale d, its reciprocal id = 1/d (0 when
// d == 0), codes from x * id; the stored d is fp16(d) rounded to nearest even. Using the stored
// (rounded) d for decoding but the unrounded id for encoding is part of the format's definition.
#include <cmath>
#include <cstring>

#include "aquakv/ops/ggml_quantize.h"
#include "ggml_blocks.h"

// Two roundings, never a fused multiply-add (matches the reference bit for bit).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv {
namespace {

using namespace ggml;

// trunc(v) clamped to [0, qmax]; NaN maps to 0 (never undefined behaviour).
inline int trunc_clamp(float v, int qmax) {
  if (!(v >= 0.0f)) return 0;
  if (v >= float(qmax)) return qmax;
  return int(v);
}

inline float reciprocal_or_zero(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

// The element of largest magnitude, keeping its sign (the first one on ties).
inline float signed_absmax(const float* x) {
  float amax = 0.0f, m = 0.0f;
  for (int i = 0; i < kQK; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  }
  return m;
}

inline void min_max(const float* x, float& mn, float& mx) {
  mn = x[0];
  mx = x[0];
  for (int i = 1; i < kQK; ++i) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
}

// Packs 32 codes (< 16 after masking) as nibbles: byte i = q[i] | q[i+16] << 4.
inline void pack_nibbles(const int* q, uint8_t* qs) {
  for (int i = 0; i < 16; ++i) qs[i] = uint8_t((q[i] & 0x0f) | (q[i + 16] & 0x0f) << 4);
}

// Bit i of the little-endian u32 qh is bit 4 of q[i].
inline void pack_high_bits(const int* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int i = 0; i < kQK; ++i) h |= uint32_t((q[i] >> 4) & 1) << i;
  std::memcpy(qh, &h, 4);
}

// The 4- and 5-bit formats differ only in the code width B: codes span [0, 2^B - 1], and for
// B = 5 the fifth bit of every code goes into qh (a u32 before the nibbles). So each family
// (symmetric: q4_0, q5_0; affine: q4_1, q5_1) is written once for both widths.
constexpr int code_max(int bits) { return (1 << bits) - 1; }
constexpr int64_t code_bytes(int bits) { return (bits == 5 ? 4 : 0) + 16; }

// Code bytes after the scale fields: qh(4) for B = 5, then qs(16).
template <int kBits>
void pack_codes(const int* q, uint8_t* p) {
  static_assert(kBits == 4 || kBits == 5);
  if constexpr (kBits == 5) {
    pack_high_bits(q, p);
    p += 4;
  }
  pack_nibbles(q, p);
}

// q4_0 / q5_0: d = (signed absmax) / -2^(B-1), code = trunc(x * id + 2^(B-1) + 0.5) clamped to
// [0, 2^B - 1]; block d(2) [qh(4)] qs(16).
template <int kBits, int64_t kBlockBytes>
void quantize_symmetric(const float* x, void* dst, int64_t n) {
  static_assert(kBlockBytes == 2 + code_bytes(kBits));
  constexpr float half = float(1 << (kBits - 1));  // 8 or 16, exact
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += kBlockBytes) {
    const float d = signed_absmax(x) / -half;
    const float id = reciprocal_or_zero(d);
    write_f16(out, d);
    int q[kQK];
    for (int i = 0; i < kQK; ++i) q[i] = trunc_clamp(x[i] * id + (half + 0.5f), code_max(kBits));
    pack_codes<kBits>(q, out + 2);
  }
}

// q4_1 / q5_1: m = min, d = (max - min) / (2^B - 1), code = trunc((x - m) * id + 0.5) clamped
// to [0, 2^B - 1]; block d(2) m(2) [qh(4)] qs(16).
template <int kBits, int64_t kBlockBytes>
void quantize_affine(const float* x, void* dst, int64_t n) {
  static_assert(kBlockBytes == 4 + code_bytes(kBits));
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += kBlockBytes) {
    float mn, mx;
    min_max(x, mn, mx);
    const float d = (mx - mn) / float(code_max(kBits));  // 15 or 31, exact
    const float id = reciprocal_or_zero(d);
    write_f16(out, d);
    write_f16(out + 2, mn);
    int q[kQK];
    for (int i = 0; i < kQK; ++i) q[i] = trunc_clamp((x[i] - mn) * id + 0.5f, code_max(kBits));
    pack_codes<kBits>(q, out + 4);
  }
}

}  // namespace

void quantize_row_q8_0_ref(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK, out += kQ8_0Bytes) {
    float amax = 0.0f;
    for (int i = 0; i < kQK; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = reciprocal_or_zero(d);
    write_f16(out, d);
    for (int i = 0; i < kQK; ++i) {
      float v = std::round(x[i] * id);  // half away from zero
      v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v);
      out[2 + i] = uint8_t(int8_t(v == v ? int(v) : 0));
    }
  }
}

void quantize_row_q4_0_ref(const float* x, void* dst, int64_t n) {
  quantize_symmetric<4, kQ4_0Bytes>(x, dst, n);
}
void quantize_row_q5_0_ref(const float* x, void* dst, int64_t n) {
  quantize_symmetric<5, kQ5_0Bytes>(x, dst, n);
}
void quantize_row_q4_1_ref(const float* x, void* dst, int64_t n) {
  quantize_affine<4, kQ4_1Bytes>(x, dst, n);
}
void quantize_row_q5_1_ref(const float* x, void* dst, int64_t n) {
  quantize_affine<5, kQ5_1Bytes>(x, dst, n);
}

bool quantize_row_ref(GgmlType type, const float* x, void* dst, int64_t n) {
  switch (type) {
    case GgmlType::Q8_0: quantize_row_q8_0_ref(x, dst, n); return true;
    case GgmlType::Q4_0: quantize_row_q4_0_ref(x, dst, n); return true;
    case GgmlType::Q4_1: quantize_row_q4_1_ref(x, dst, n); return true;
    case GgmlType::Q5_0: quantize_row_q5_0_ref(x, dst, n); return true;
    case GgmlType::Q5_1: quantize_row_q5_1_ref(x, dst, n); return true;
    default: return false;
  }
}

}  // namespace aquakv
