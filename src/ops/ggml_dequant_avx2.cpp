// AVX2 decoders for the formats the engine reads most (F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and
// the K-quants Q4_K and Q6_K of Q4_K_M files). Each computes
// exactly the float32 operations of its scalar reference in ggml_dequant_ref.cpp, in the same
// order and without fusing multiply and add, so the results are bit-identical.
#include <immintrin.h>

#include <cstring>

#include "ggml_blocks.h"
#include "ggml_dequant.h"

// Multiply and add must stay two roundings (the formats' definition); forbid contraction to FMA,
// which -mfma would otherwise allow the compiler to do.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace aquakv::ggml {
namespace {

// 32 4-bit codes of qs[16] as 32 bytes in value order: low nibbles (values 0..15) then high.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(raw, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
  return _mm256_set_m128i(hi, lo);
}

// Bytes 8k..8k+7 of v (k = 0..3) widened to 8 int32 lanes.
template <int k>
inline __m256i bytes_to_i32(__m256i v) {
  const __m128i half = _mm256_extracti128_si256(v, k / 2);
  return _mm256_cvtepi8_epi32(k % 2 == 0 ? half : _mm_srli_si128(half, 8));
}

// dst[0..31] = float(q) * d (+ m when kAddMin), q given as 32 signed bytes.
template <bool kAddMin>
inline void store_block(__m256i q, __m256 d, __m256 m, float* dst) {
  const __m256 v0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<0>(q)));
  const __m256 v1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<1>(q)));
  const __m256 v2 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<2>(q)));
  const __m256 v3 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<3>(q)));
  if constexpr (kAddMin) {
    _mm256_storeu_ps(dst, _mm256_add_ps(v0, m));
    _mm256_storeu_ps(dst + 8, _mm256_add_ps(v1, m));
    _mm256_storeu_ps(dst + 16, _mm256_add_ps(v2, m));
    _mm256_storeu_ps(dst + 24, _mm256_add_ps(v3, m));
  } else {
    _mm256_storeu_ps(dst, v0);
    _mm256_storeu_ps(dst + 8, v1);
    _mm256_storeu_ps(dst + 16, v2);
    _mm256_storeu_ps(dst + 24, v3);
  }
}

// dst[0..31] = (d * float(q)) - m, q given as 32 unsigned bytes below 128 (Q4_K's order).
inline void store_block_sub(__m256i q, __m256 d, __m256 m, float* dst) {
  _mm256_storeu_ps(dst, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<0>(q))), m));
  _mm256_storeu_ps(dst + 8, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<1>(q))), m));
  _mm256_storeu_ps(dst + 16, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<2>(q))), m));
  _mm256_storeu_ps(dst + 24, _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(bytes_to_i32<3>(q))), m));
}

// The 32 fifth bits of a Q5 block (bit i of qh4's little-endian u32 belongs to value i) as 32
// bytes in value order, 0x10 where the bit is set and 0 elsewhere. Byte i first receives qh's
// byte i/8; OR-ing every bit but i%8 to one leaves 0xff exactly when bit i%8 was set.
inline __m256i fifth_bits(const uint8_t* qh4) {
  uint32_t qh;
  std::memcpy(&qh, qh4, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(qh)),
      _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                         0x0303030303030303));
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

}  // namespace

void dequant_f16_avx2(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = read_f16(src + 2 * i);
}

void dequant_q4_0_avx2(const uint8_t* src, float* dst, int64_t n) {
  const __m256i eight = _mm256_set1_epi8(8);
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_0Bytes, dst += kQK) {
    const __m256 d = _mm256_set1_ps(read_f16(src));
    const __m256i q = _mm256_sub_epi8(unpack_nibbles(src + 2), eight);
    store_block<false>(q, d, d, dst);
  }
}

void dequant_q4_1_avx2(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ4_1Bytes, dst += kQK) {
    const __m256 d = _mm256_set1_ps(read_f16(src));
    const __m256 m = _mm256_set1_ps(read_f16(src + 2));
    store_block<true>(unpack_nibbles(src + 4), d, m, dst);
  }
}

// Q5_0: x = d * (q - 16), q = nibble | fifth bit << 4 (the reference's d * float(q - 16)).
void dequant_q5_0_avx2(const uint8_t* src, float* dst, int64_t n) {
  const __m256i sixteen = _mm256_set1_epi8(16);
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ5_0Bytes, dst += kQK) {
    const __m256 d = _mm256_set1_ps(read_f16(src));
    const __m256i q = _mm256_or_si256(unpack_nibbles(src + 6), fifth_bits(src + 2));
    store_block<false>(_mm256_sub_epi8(q, sixteen), d, d, dst);
  }
}

// Q5_1: x = d * q + m, q as in Q5_0.
void dequant_q5_1_avx2(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ5_1Bytes, dst += kQK) {
    const __m256 d = _mm256_set1_ps(read_f16(src));
    const __m256 m = _mm256_set1_ps(read_f16(src + 2));
    store_block<true>(_mm256_or_si256(unpack_nibbles(src + 8), fifth_bits(src + 4)), d, m, dst);
  }
}

void dequant_q8_0_avx2(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += kQ8_0Bytes, dst += kQK) {
    const __m256 d = _mm256_set1_ps(read_f16(src));
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2));
    store_block<false>(q, d, d, dst);
  }
}

// Q4_K: sub-blocks 2i and 2i+1 are the low and high nibbles of qs[32i .. 32i+31];
// x = (d * sc_j) * q - (dmin * mn_j), the scale products in scalar float as in the reference.
void dequant_q4_k_avx2(const uint8_t* src, float* dst, int64_t n) {
  const __m256i mask = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ4_KBytes, dst += kQK_K) {
    const float d = read_f16(src), dmin = read_f16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qs = src + 16;
    for (int i = 0; i < 4; ++i) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * i));
      const __m256i lo = _mm256_and_si256(raw, mask);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
      int sc, mn;
      scale_min_k4(scales, 2 * i, sc, mn);
      store_block_sub(lo, _mm256_set1_ps(d * float(sc)), _mm256_set1_ps(dmin * float(mn)), dst + 64 * i);
      scale_min_k4(scales, 2 * i + 1, sc, mn);
      store_block_sub(hi, _mm256_set1_ps(d * float(sc)), _mm256_set1_ps(dmin * float(mn)), dst + 64 * i + 32);
    }
  }
}

// Q6_K: each half h of 128 values takes ql[64h..64h+63] and qh[32h..32h+31]; its quarter g
// (32 values k) has low 4 bits from ql[64h + 32(g%2) + k] (nibble g/2) and high 2 bits from
// bits 2g..2g+1 of qh[32h + k]; x = (d * scale[16-value group]) * (q - 32).
void dequant_q6_k_avx2(const uint8_t* src, float* dst, int64_t n) {
  const __m256i mask4 = _mm256_set1_epi8(0x0f), mask2 = _mm256_set1_epi8(0x03);
  const __m256i off = _mm256_set1_epi8(32);
  for (int64_t b = 0; b < n / kQK_K; ++b, src += kQ6_KBytes, dst += kQK_K) {
    const auto* scales = reinterpret_cast<const int8_t*>(src + 192);
    const float d = read_f16(src + 208);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 128 + 32 * h));
      const __m256i low[4] = {_mm256_and_si256(ql0, mask4), _mm256_and_si256(ql1, mask4),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), mask4),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), mask4)};
      for (int g = 0; g < 4; ++g) {
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), mask2);
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(low[g], _mm256_slli_epi16(high, 4)), off);
        float* out = dst + 128 * h + 32 * g;
        const int s = 8 * h + 2 * g;
        const __m256 d0 = _mm256_set1_ps(d * float(scales[s]));
        const __m256 d1 = _mm256_set1_ps(d * float(scales[s + 1]));
        _mm256_storeu_ps(out, _mm256_mul_ps(d0, _mm256_cvtepi32_ps(bytes_to_i32<0>(q))));
        _mm256_storeu_ps(out + 8, _mm256_mul_ps(d0, _mm256_cvtepi32_ps(bytes_to_i32<1>(q))));
        _mm256_storeu_ps(out + 16, _mm256_mul_ps(d1, _mm256_cvtepi32_ps(bytes_to_i32<2>(q))));
        _mm256_storeu_ps(out + 24, _mm256_mul_ps(d1, _mm256_cvtepi32_ps(bytes_to_i32<3>(q))));
      }
    }
  }
}

}  // namespace aquakv::ggml
