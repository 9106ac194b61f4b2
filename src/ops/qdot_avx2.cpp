// AVX2+FMA kernels of ops/qdot.h. Same math as the scalar references in qdot.cpp; only the
// order of float additions differs (8 lanes, then a horizontal sum).
#include <immintrin.h>

#include <cstring>

#include "aquakv/util/check.h"
#include "aquakv/ops/qdot.h"
#include "aquakv/util/fp16.h"
#include "avx2_math.h"

namespace aquakv::detail {
namespace {

inline float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes of packed nibbles -> 32 bytes: codes 0..15 of values 0..15 (low nibbles), then of
// values 16..31 (high nibbles).
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// 32 bits -> 32 bytes, byte j = 16 when bit j is set, else 0 (the fifth bit of 5-bit codes).
inline __m256i bits_to_16s(const uint8_t* qh4) {
  uint32_t qh;
  std::memcpy(&qh, qh4, 4);
  return bits_to_16s_avx2(qh);
}

// Sum of unsigned codes (0..31) times signed activations, as 8 int32 lanes -> f32.
inline __m256 udot(__m256i codes, const int8_t* q) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i p16 = _mm256_maddubs_epi16(codes, a);  // |pair| <= 2*31*127: no saturation
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

// Signed codes times signed activations: |c| * (a with c's sign).
inline __m256 sdot(__m256i codes, const int8_t* q) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(codes, codes),
                                           _mm256_sign_epi8(a, codes));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

}  // namespace

void quantize_q8_avx2(const float* x, Q8Act* out, int64_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      mx = _mm256_max_ps(mx, _mm256_and_ps(v[k], abs_mask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    __m256i qi[4];
    __m256i isum = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k) {
      const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[k], vid),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      qi[k] = _mm256_cvtps_epi32(r);
      isum = _mm256_add_epi32(isum, qi[k]);
    }
    // Pack 32 int32 -> 32 int8 in order (packs work per 128-bit lane; fix with a permute).
    const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]);
    const __m256i p23 = _mm256_packs_epi32(qi[2], qi[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), p);
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    out[b].d = d;
    out[b].s = d * float(_mm_cvtsi128_si32(s4));
  }
}

namespace {

// Block kernels: blk(block_ptr, activations, acc, acc_s) adds one weight block's dot with one
// activation block to the vector accumulator acc and the scalar accumulator acc_s. Shared by
// the single-row and multi-row dots so both do the same float operations.
struct Q4_0Block {
  static constexpr int64_t kBytes = 18;
  void operator()(const uint8_t* blk, const Q8Act& a, __m256& acc, float& s) const {
    const float dw = half_at(blk);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), udot(unpack_nibbles(blk + 2), a.q), acc);
    s -= 8.0f * dw * a.s;
  }
};
struct Q4_1Block {
  static constexpr int64_t kBytes = 20;
  void operator()(const uint8_t* blk, const Q8Act& a, __m256& acc, float& s) const {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(blk) * a.d), udot(unpack_nibbles(blk + 4), a.q), acc);
    s += half_at(blk + 2) * a.s;
  }
};
struct Q5_0Block {
  static constexpr int64_t kBytes = 22;
  void operator()(const uint8_t* blk, const Q8Act& a, __m256& acc, float& s) const {
    const float dw = half_at(blk);
    const __m256i c = _mm256_or_si256(unpack_nibbles(blk + 6), bits_to_16s(blk + 2));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), udot(c, a.q), acc);
    s -= 16.0f * dw * a.s;
  }
};
struct Q5_1Block {
  static constexpr int64_t kBytes = 24;
  void operator()(const uint8_t* blk, const Q8Act& a, __m256& acc, float& s) const {
    const __m256i c = _mm256_or_si256(unpack_nibbles(blk + 8), bits_to_16s(blk + 4));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(blk) * a.d), udot(c, a.q), acc);
    s += half_at(blk + 2) * a.s;
  }
};
struct Q8_0Block {
  static constexpr int64_t kBytes = 34;
  void operator()(const uint8_t* blk, const Q8Act& a, __m256& acc, float&) const {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_at(blk) * a.d), sdot(c, a.q), acc);
  }
};

// Runs blk over nb blocks with two independent accumulator pairs (even/odd blocks) so
// consecutive FMAs do not wait on each other.
template <typename Block>
inline float run_blocks(const uint8_t* p, const Q8Act* x, int64_t nb, Block blk) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float s0 = 0.0f, s1 = 0.0f;
  const int64_t bb = Block::kBytes;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    blk(p + bb * b, x[b], acc0, s0);
    blk(p + bb * (b + 1), x[b + 1], acc1, s1);
  }
  if (b < nb) blk(p + bb * b, x[b], acc0, s0);
  return hsum(_mm256_add_ps(acc0, acc1)) + (s0 + s1);
}

// run_blocks for G activation vectors (x + g*nb) at once: the same accumulators and order per
// activation, with the activation loop inside the block loop so a block's bytes are loaded once
// for all G (the compiler can share the unpacking too). G <= 4 keeps 8 accumulators in the 16
// ymm registers.
template <int G, typename Block>
inline void run_blocks_g(const uint8_t* p, const Q8Act* x, int64_t nb, Block blk, float* out) {
  __m256 acc0[G], acc1[G];
  float s0[G], s1[G];
  for (int g = 0; g < G; ++g) acc0[g] = acc1[g] = _mm256_setzero_ps(), s0[g] = s1[g] = 0.0f;
  const int64_t bb = Block::kBytes;
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    for (int g = 0; g < G; ++g) blk(p + bb * b, x[g * nb + b], acc0[g], s0[g]);
    for (int g = 0; g < G; ++g) blk(p + bb * (b + 1), x[g * nb + b + 1], acc1[g], s1[g]);
  }
  if (b < nb) {
    for (int g = 0; g < G; ++g) blk(p + bb * b, x[g * nb + b], acc0[g], s0[g]);
  }
  for (int g = 0; g < G; ++g) out[g] = hsum(_mm256_add_ps(acc0[g], acc1[g])) + (s0[g] + s1[g]);
}

template <typename Block>
void rows_with(const uint8_t* p, const Q8Act* x, int64_t nb, int64_t n_act, float* out) {
  int64_t t = 0;
  for (; t + 4 <= n_act; t += 4) run_blocks_g<4>(p, x + t * nb, nb, Block{}, out + t);
  switch (n_act - t) {
    case 3: run_blocks_g<3>(p, x + t * nb, nb, Block{}, out + t); break;
    case 2: run_blocks_g<2>(p, x + t * nb, nb, Block{}, out + t); break;
    case 1: run_blocks_g<1>(p, x + t * nb, nb, Block{}, out + t); break;
    default: break;
  }
}

}  // namespace

float qdot_q8_avx2(GgmlType type, const void* row, const Q8Act* x, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / 32;
  switch (type) {
    case GgmlType::Q4_0: return run_blocks(p, x, nb, Q4_0Block{});
    case GgmlType::Q4_1: return run_blocks(p, x, nb, Q4_1Block{});
    case GgmlType::Q5_0: return run_blocks(p, x, nb, Q5_0Block{});
    case GgmlType::Q5_1: return run_blocks(p, x, nb, Q5_1Block{});
    case GgmlType::Q8_0: return run_blocks(p, x, nb, Q8_0Block{});
    default:
      AQUAKV_CHECK(false, "qdot_q8_avx2: not an integer-path type");
      return 0.0f;
  }
}

void qdot_q8_rows_avx2(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                       float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / 32;
  switch (type) {
    case GgmlType::Q4_0: return rows_with<Q4_0Block>(p, x, nb, n_act, out);
    case GgmlType::Q4_1: return rows_with<Q4_1Block>(p, x, nb, n_act, out);
    case GgmlType::Q5_0: return rows_with<Q5_0Block>(p, x, nb, n_act, out);
    case GgmlType::Q5_1: return rows_with<Q5_1Block>(p, x, nb, n_act, out);
    case GgmlType::Q8_0: return rows_with<Q8_0Block>(p, x, nb, n_act, out);
    default:
      AQUAKV_CHECK(false, "qdot_q8_rows_avx2: not an integer-path type");
  }
}

float dot_f32_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float acc = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace aquakv::detail
