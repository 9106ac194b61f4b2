// AVX-512 (F, BW, VL, VNNI) kernels of ops/qdot.h for the integer path. Same math as the
// scalar references in qdot.cpp: per weight block the integer sum of code*activation is exact;
// only the order of float additions differs (8 lanes, two accumulators, then a horizontal sum).
//
// Per 32-value block, 32 unsigned codes (u8) meet 32 activations (s8) in one vpdpbusd (VNNI on
// 256-bit registers through AVX512VL): it multiplies u8 by s8 and adds groups of 4 into 8 int32
// lanes, replacing AVX2's maddubs + madd pair. The lanes become floats and are scaled by dw*d
// with one FMA. Q8_0's codes are signed: they are biased to c+128 (u8) and 128*sum(q), computed
// with the same instruction against a vector of 128s, is subtracted (exact: |lane| < 2^17).
// Full 512-bit registers (two blocks per step) were measured slower on decode: the inserts and
// per-half scale broadcasts they need cost more than they save on these short rows.
//
// One template serves R weight rows x G activation vectors with the same per-(row, activation)
// operations in the same order, so all shapes give bit-identical results: R=1, G=1 is the single
// dot, G<=4 one weight row for several sequences (batched decode). Compiled with
// -ffp-contract=off (CMakeLists.txt) so the scalar terms are never fused differently in
// different shapes.
//
// Measured and rejected (bench_decode, docs/RESULTS.md): R=4 rows sharing each activation load
// on the GGUF row layout, with or without prefetching the next group, was no faster on a
// cache-resident matrix and ~1.5x slower on a matrix streamed from memory (four interleaved row
// streams instead of one). Several rows per pass needs the rows repacked so that one load
// brings a block of every row: ops/qpack.h does that at load time for Q4_0, Q4_1 and Q8_0.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstring>

#include "aquakv/util/check.h"
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

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline __m256i act(const Q8Act& a) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q));
}

// out[r*G + g] = dot(row r, activation g) over nb blocks. rows[r] and xs[g] point at block 0.
// Even and odd blocks go to two accumulators so that consecutive FMAs do not wait on each other.
template <typename K, int R, int G>
void run(const uint8_t* const* rows, const Q8Act* const* xs, int64_t nb, float* out) {
  __m256 acc[2][R][G];
  float s[R][G];
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) {
      acc[0][r][g] = acc[1][r][g] = _mm256_setzero_ps();
      s[r][g] = 0.0f;
    }
  }
  const __m256i bias = _mm256_set1_epi8(int8_t(0x80));
  const __m256i zero = _mm256_setzero_si256();
  // Block b into accumulator set h (a compile-time index keeps the accumulators in registers).
  auto step = [&]<int h>(int64_t b) __attribute__((always_inline)) {
    __m256i a[G], corr[G];
    for (int g = 0; g < G; ++g) {
      a[g] = act(xs[g][b]);
      if constexpr (K::kBiased) corr[g] = _mm256_dpbusd_epi32(zero, bias, a[g]);
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* p = rows[r] + b * K::kBytes;
      const __m256i w = K::codes(p);
      const float dw = half_at(p);
      for (int g = 0; g < G; ++g) {
        __m256i is = _mm256_dpbusd_epi32(zero, w, a[g]);
        if constexpr (K::kBiased) is = _mm256_sub_epi32(is, corr[g]);
        acc[h][r][g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(dw * xs[g][b].d), acc[h][r][g]);
        s[r][g] += K::term(p, xs[g][b]);
      }
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    step.template operator()<0>(b);
    step.template operator()<1>(b + 1);
  }
  if (b < nb) step.template operator()<0>(b);
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) out[r * G + g] = hsum(_mm256_add_ps(acc[0][r][g], acc[1][r][g])) + s[r][g];
  }
}

// Groups of 4 activations, then the rest one shape at a time.
template <typename K>
void rows_with(const uint8_t* p, const Q8Act* x, int64_t nb, int64_t n_act, float* out) {
  const uint8_t* rows[1] = {p};
  int64_t t = 0;
  for (; t + 4 <= n_act; t += 4) {
    const Q8Act* xs[4] = {x + t * nb, x + (t + 1) * nb, x + (t + 2) * nb, x + (t + 3) * nb};
    run<K, 1, 4>(rows, xs, nb, out + t);
  }
  for (; t < n_act; ++t) {
    const Q8Act* xs[1] = {x + t * nb};
    run<K, 1, 1>(rows, xs, nb, out + t);
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
    default: AQUAKV_CHECK(false, "qdot avx512: not an integer-path type");
  }
}

}  // namespace

float qdot_q8_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n) {
  float out = 0.0f;
  const uint8_t* rows[1] = {static_cast<const uint8_t*>(row)};
  const Q8Act* xs[1] = {x};
  with_kernel(type, [&](auto k) { run<decltype(k), 1, 1>(rows, xs, n / 32, &out); });
  return out;
}

void qdot_q8_rows_avx512(GgmlType type, const void* row, const Q8Act* x, int64_t n,
                         int64_t n_act, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  with_kernel(type, [&](auto k) { rows_with<decltype(k)>(p, x, n / 32, n_act, out); });
}

}  // namespace aquakv::detail
