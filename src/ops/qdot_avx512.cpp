// AVX-512 (F, BW, VL, VNNI) kernels of ops/qdot.h for the integer path. Same math as the
// scalar references in qdot.cpp: per weight block the integer sum of code*activation is exact;
// only the order of float additions differs (16 lanes, two blocks per step, then a horizontal
// sum).
//
// Per step, two consecutive 32-value blocks fill one zmm: 64 unsigned codes (u8) against 64
// activations (s8). vpdpbusd multiplies u8 by s8 and adds groups of 4 into 16 int32 lanes, so
// lanes 0..7 hold partial sums of block b and lanes 8..15 those of block b+1; the lanes become
// floats and are scaled by dw*d of their block with one FMA into a float accumulator. Q8_0's
// codes are signed: they are biased to c+128 (u8) and 128*sum(q), computed with the same
// instruction against a vector of 128s, is subtracted (still exact integers: |lane| < 2^17).
//
// One template serves three shapes with the same per-(row, activation) operations in the same
// order, so the results are bit-identical between them: R weight rows x G activation vectors
// (R=1, G=1: single dot; R=4: several output rows sharing each activation load; G<=4: one
// weight row for several sequences). Compiled with -ffp-contract=off (CMakeLists.txt) so the
// scalar terms are never fused differently in different shapes.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cassert>
#include <cstring>

#include "aquakv/ops/qdot.h"

namespace aquakv::detail {
namespace {

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 bytes of packed nibbles -> 32 codes: low nibbles (values 0..15), then high (16..31).
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// 32 bits -> 32 bytes, byte j = 16 when bit j is set (the fifth bit of 5-bit codes).
inline __m256i bits_to_16s(const uint8_t* qh4) {
  uint32_t qh;
  std::memcpy(&qh, qh4, 4);
  const __mmask32 m = _cvtu32_mask32(qh);
  return _mm256_maskz_mov_epi8(m, _mm256_set1_epi8(16));
}

// Block formats: codes (32 u8), scale dw, and the scalar term added per block (see qdot.h:
// value = dw*c + m, the m part contributes m * a.s).
struct Q4_0K {
  static constexpr int64_t kBytes = 18;
  static constexpr bool kBiased = false;
  static __m256i codes(const uint8_t* b) { return unpack_nibbles(b + 2); }
  static float term(const uint8_t* b, const Q8Act& a) { return -8.0f * half_at(b) * a.s; }
};
struct Q4_1K {
  static constexpr int64_t kBytes = 20;
  static constexpr bool kBiased = false;
  static __m256i codes(const uint8_t* b) { return unpack_nibbles(b + 4); }
  static float term(const uint8_t* b, const Q8Act& a) { return half_at(b + 2) * a.s; }
};
struct Q5_0K {
  static constexpr int64_t kBytes = 22;
  static constexpr bool kBiased = false;
  static __m256i codes(const uint8_t* b) {
    return _mm256_or_si256(unpack_nibbles(b + 6), bits_to_16s(b + 2));
  }
  static float term(const uint8_t* b, const Q8Act& a) { return -16.0f * half_at(b) * a.s; }
};
struct Q5_1K {
  static constexpr int64_t kBytes = 24;
  static constexpr bool kBiased = false;
  static __m256i codes(const uint8_t* b) {
    return _mm256_or_si256(unpack_nibbles(b + 8), bits_to_16s(b + 4));
  }
  static float term(const uint8_t* b, const Q8Act& a) { return half_at(b + 2) * a.s; }
};
struct Q8_0K {
  static constexpr int64_t kBytes = 34;
  static constexpr bool kBiased = true;  // codes are c + 128
  static __m256i codes(const uint8_t* b) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    return _mm256_xor_si256(c, _mm256_set1_epi8(int8_t(0x80)));
  }
  static float term(const uint8_t*, const Q8Act&) { return 0.0f; }
};

inline __m512i pair(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}
inline __m256i act(const Q8Act& a) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q));
}

// out[r*G + g] = dot(row r, activation g) over nb blocks. rows[r] and xs[g] point at block 0.
// pf > 0: prefetch the bytes pf past each block of row 0 (the next group of rows).
template <typename K, int R, int G>
void run(const uint8_t* const* rows, const Q8Act* const* xs, int64_t nb, int64_t pf,
         float* out) {
  __m512 acc[R][G];
  float s[R][G];
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps(), s[r][g] = 0.0f;
  }
  const __m512i bias = _mm512_set1_epi8(int8_t(0x80));
  const __m512i zero = _mm512_setzero_si512();
  // One step: blocks b and (when two) b+1; a lone last block leaves the upper half zero.
  auto step = [&](int64_t b, bool two) {
    __m512i a[G], corr[G];
    for (int g = 0; g < G; ++g) {
      a[g] = pair(act(xs[g][b]), two ? act(xs[g][b + 1]) : _mm256_setzero_si256());
      if constexpr (K::kBiased) corr[g] = _mm512_dpbusd_epi32(zero, bias, a[g]);
    }
    if (pf > 0) _mm_prefetch(reinterpret_cast<const char*>(rows[0] + b * K::kBytes + pf), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const uint8_t* p0 = rows[r] + b * K::kBytes;
      const uint8_t* p1 = p0 + K::kBytes;
      const __m512i w = pair(K::codes(p0), two ? K::codes(p1) : _mm256_setzero_si256());
      const float d0 = half_at(p0), d1 = two ? half_at(p1) : 0.0f;
      for (int g = 0; g < G; ++g) {
        __m512i is = _mm512_dpbusd_epi32(zero, w, a[g]);
        if constexpr (K::kBiased) is = _mm512_sub_epi32(is, corr[g]);
        const float sc1 = two ? d1 * xs[g][b + 1].d : 0.0f;
        const __m512 sc = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(d0 * xs[g][b].d), _mm512_set1_ps(sc1));
        acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), sc, acc[r][g]);
        s[r][g] += K::term(p0, xs[g][b]);
        if (two) s[r][g] += K::term(p1, xs[g][b + 1]);
      }
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) step(b, true);
  if (b < nb) step(b, false);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) out[r * G + g] = _mm512_reduce_add_ps(acc[r][g]) + s[r][g];
  }
}

// Groups of 4 activations, then the rest one shape at a time.
template <typename K>
void rows_with(const uint8_t* p, const Q8Act* x, int64_t nb, int64_t n_act, float* out) {
  const uint8_t* rows[1] = {p};
  int64_t t = 0;
  for (; t + 4 <= n_act; t += 4) {
    const Q8Act* xs[4] = {x + t * nb, x + (t + 1) * nb, x + (t + 2) * nb, x + (t + 3) * nb};
    run<K, 1, 4>(rows, xs, nb, 0, out + t);
  }
  for (; t < n_act; ++t) {
    const Q8Act* xs[1] = {x + t * nb};
    run<K, 1, 1>(rows, xs, nb, 0, out + t);
  }
}

// Groups of 4 weight rows sharing each activation load, then single rows.
template <typename K>
void multirow_with(const uint8_t* p, int64_t row_bytes, int64_t n_rows, const Q8Act* x,
                   int64_t nb, float* out) {
  const Q8Act* xs[1] = {x};
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) {
    const uint8_t* rows[4] = {p + r * row_bytes, p + (r + 1) * row_bytes, p + (r + 2) * row_bytes,
                              p + (r + 3) * row_bytes};
    run<K, 4, 1>(rows, xs, nb, 4 * row_bytes, out + r);
  }
  for (; r < n_rows; ++r) {
    const uint8_t* rows[1] = {p + r * row_bytes};
    run<K, 1, 1>(rows, xs, nb, 0, out + r);
  }
}

template <typename Fn>
void with_kernel(GgmlType type, Fn&& fn) {
  switch (type) {
    case GgmlType::Q4_0: return fn(Q4_0K{});
    case GgmlType::Q4_1: return fn(Q4_1K{});
    case GgmlType::Q5_0: return fn(Q5_0K{});
    case GgmlType::Q5_1: return fn(Q5_1K{});
    case GgmlType::Q8_0: return fn(Q8_0K{});
    default: assert(false && "qdot avx512: not an integer-path type");
  }
}

}  // namespace

float qdot_q8_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n) {
  float out = 0.0f;
  const uint8_t* rows[1] = {static_cast<const uint8_t*>(row)};
  const Q8Act* xs[1] = {x};
  with_kernel(type, [&](auto k) { run<decltype(k), 1, 1>(rows, xs, n / 32, 0, &out); });
  return out;
}

void qdot_q8_rows_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n,
                         int64_t n_act, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  with_kernel(type, [&](auto k) { rows_with<decltype(k)>(p, x, n / 32, n_act, out); });
}

void qdot_q8_multirow_avx512(GgmlType type, const void* rows, int64_t row_bytes, int64_t n_rows,
                             const Q8Act* x, int64_t n, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(rows);
  with_kernel(type, [&](auto k) { multirow_with<decltype(k)>(p, row_bytes, n_rows, x, n / 32, out); });
}

}  // namespace aquakv::detail
