// AVX-512 HIGGS decode for 2-dimensional grids of 16, 64 and 256 points (higgs2/3/4), and in
// groups of 192 also for 4-dimensional grids of 16 points and 8-dimensional grids with 16-bit
// codes (E8P), the rotation fused in registers. 16 points:
// x and y coordinates in one register each (vpermps). 64 points: in 4 registers each, so a
// point is two 32-entry lookups by vpermi2ps and a blend on the index's bit 5. 256 points: a 64-bit gather of (x, y) per code
// (measured on this project's Xeon: 1.4x faster than 16-register lookups, 30% slower for 64
// points). Per 16 codes: unpack to 16 indices, fetch 32 values, multiply by the group's factor
// (the same single multiply as the scalar path, so the result is identical).
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cmath>

#include "aquakv/quant/hadamard.h"
#include "fwht16_avx512.h"
#include "higgs_kernels.h"

namespace aquakv::detail {
namespace {

// One coordinate of a 64-point grid in registers.
struct Coords64 {
  __m512 t[4];
  Coords64(const float* pts, int n, int axis) {
    alignas(64) float v[64] = {};
    for (int i = 0; i < n && i < 64; ++i) v[i] = pts[2 * i + axis];
    for (int k = 0; k < 4; ++k) t[k] = _mm512_load_ps(v + 16 * k);
  }
  // t[idx] for 16 indices < 64: 32-entry lookups on bits 0-4, a blend on bit 5.
  __m512 operator()(__m512i idx) const {
    const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
    return _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[0], idx, t[1]), _mm512_permutex2var_ps(t[2], idx, t[3]));
  }
};

// 16 codes from `p` as int32: 8-bit codes are bytes; 6-bit codes are 4 per 3 bytes (LSB first):
// every 128-bit lane holds the 12 bytes, each lane's dword takes the 3 bytes of its group
// (vpshufb) and shifts its code down.
template <int Bits>
struct Codes16 {
  __m512i pick, shift;
  Codes16() {
    alignas(64) int8_t b[64];
    alignas(64) int32_t s[16];
    for (int j = 0; j < 16; ++j) {
      const int grp = j / 4;
      for (int k = 0; k < 4; ++k) b[4 * j + k] = int8_t(k < 3 ? 3 * grp + k : -128);
      s[j] = 6 * (j % 4);
    }
    pick = _mm512_load_si512(b);
    shift = _mm512_load_si512(s);
  }
  __m512i operator()(const uint8_t* p) const {
    if constexpr (Bits == 8) {
      return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else if constexpr (Bits == 4) {  // 8 bytes, low nibble first: byte j/2, shift 4*(j%2)
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      const __m512i dup = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), b);
      return _mm512_and_si512(_mm512_srlv_epi32(dup, _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4)),
                              _mm512_set1_epi32(15));
    } else {
      const __m512i raw = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(__mmask16(0x0FFF), p));
      const __m512i w = _mm512_shuffle_epi8(raw, pick);
      return _mm512_and_si512(_mm512_srlv_epi32(w, shift), _mm512_set1_epi32(63));
    }
  }
};

// Loaders: one group of 192 values of a row as 12 registers of scaled grid points, v[i] = values
// 16 i .. 16 i + 15 of the group times f (one multiply each, as HiggsCodec's scalar gather and
// scale). `codes` points at the group's first code byte.

// d = 2 grids of 16, 64 or 256 points: 96 codes, 16 codes (32 values) per step.
template <int N, int Bits>
struct PairsLoader {
  static constexpr int64_t kGroupBytes = 96 * Bits / 8;
  const float* pts;
  Coords64 cx, cy;
  Codes16<Bits> unpack;
  __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  explicit PairsLoader(const float* p) : pts(p), cx(p, N, 0), cy(p, N, 1) {}
  // 16 codes at `c16` -> 32 values: v[0] = values 0-15, v[1] = 16-31, times f.
  void block(const uint8_t* c16, __m512 f, __m512* v) const {
    const __m512i idx = unpack(c16);
    if constexpr (N == 256) {  // (x, y) as one 64-bit element per code
      const double* table = reinterpret_cast<const double*>(pts);
      v[0] = _mm512_mul_ps(_mm512_castpd_ps(_mm512_i32gather_pd(_mm512_castsi512_si256(idx), table, 8)), f);
      v[1] = _mm512_mul_ps(_mm512_castpd_ps(_mm512_i32gather_pd(_mm512_extracti64x4_epi64(idx, 1), table, 8)), f);
    } else {
      __m512 vx, vy;
      if constexpr (N == 16) {  // one register per coordinate
        vx = _mm512_permutexvar_ps(idx, cx.t[0]);
        vy = _mm512_permutexvar_ps(idx, cy.t[0]);
      } else {
        vx = cx(idx);
        vy = cy(idx);
      }
      v[0] = _mm512_mul_ps(_mm512_permutex2var_ps(vx, lo, vy), f);
      v[1] = _mm512_mul_ps(_mm512_permutex2var_ps(vx, hi, vy), f);
    }
  }
  void operator()(const uint8_t* codes, __m512 f, __m512* v) const {
    _Pragma("GCC unroll 6") for (int b = 0; b < 6; ++b) block(codes + 16 * b * Bits / 8, f, v + 2 * b);
  }
};

template <int N, int Bits>
void decode_pairs(const float* pts, const uint8_t* in, int64_t rows, int64_t row_bytes, int64_t ng, int64_t g,
                  float* x) {
  const PairsLoader<N, Bits> load(pts);
  const float inv_sqrt_g = float(1.0 / std::sqrt(double(g)));
  const int64_t dim = ng * g;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * row_bytes;
    const uint8_t* codes = o + 2 * ng;
    float* xr = x + r * dim;
    for (int64_t k = 0; k < ng; ++k) {
      const __m512 f = _mm512_set1_ps(_cvtsh_ss(uint16_t(o[2 * k] | o[2 * k + 1] << 8)) * inv_sqrt_g);
      for (int64_t c = k * g / 2; c < (k + 1) * g / 2; c += 16) {  // 16 codes -> 32 values
        __m512 v[2];
        load.block(codes + c * Bits / 8, f, v);
        _mm512_storeu_ps(xr + 2 * c, v[0]);
        _mm512_storeu_ps(xr + 2 * c + 16, v[1]);
      }
    }
  }
}

// d = 4, 16 points, 4-bit codes (two per byte, low nibble first): 48 codes in 24 bytes. The grid
// is 64 floats (4 registers); lane j of register i reads point code(4i + j/4), coordinate j % 4,
// i.e. table entry 4 code + j % 4: a 32-entry lookup on bits 0-4 and a blend on bit 5.
struct Quad16Loader {
  static constexpr int64_t kGroupBytes = 24;
  __m512 t[4];
  __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
  __m512i coord = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  explicit Quad16Loader(const float* pts) {
    for (int k = 0; k < 4; ++k) t[k] = _mm512_loadu_ps(pts + 16 * k);
  }
  void operator()(const uint8_t* codes, __m512 f, __m512* v) const {
    const __m512i mask = _mm512_set1_epi32(15);
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) {  // 4 codes (2 bytes) -> 16 values
      const __m512i w = _mm512_set1_epi32(int(codes[2 * i] | codes[2 * i + 1] << 8));
      const __m512i code = _mm512_and_si512(_mm512_srlv_epi32(w, shift), mask);
      const __m512i idx = _mm512_or_si512(_mm512_slli_epi32(code, 2), coord);
      const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
      const __m512 p =
          _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[0], idx, t[1]), _mm512_permutex2var_ps(t[2], idx, t[3]));
      v[i] = _mm512_mul_ps(p, f);
    }
  }
};

// d = 8, 16-bit codes (whole little-endian uint16, e.g. E8P's 65536 points): 24 codes in 48
// bytes; a register is two points, two 32-byte loads. Codes >= n are clamped to n - 1 as in the
// scalar gather (never from encode; corrupt bytes stay inside the grid).
struct Oct16Loader {
  static constexpr int64_t kGroupBytes = 48;
  const float* pts;
  uint32_t last;
  Oct16Loader(const float* p, int64_t n) : pts(p), last(uint32_t(n - 1)) {}
  __m256d point(const uint8_t* c) const {
    uint32_t code = uint32_t(c[0] | c[1] << 8);
    code = code < last ? code : last;
    return _mm256_castps_pd(_mm256_loadu_ps(pts + 8 * int64_t(code)));
  }
  void operator()(const uint8_t* codes, __m512 f, __m512* v) const {
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) {
      const __m512d p = _mm512_insertf64x4(_mm512_castpd256_pd512(point(codes + 4 * i)), point(codes + 4 * i + 2), 1);
      v[i] = _mm512_mul_ps(_mm512_castpd_ps(p), f);
    }
  }
};

// The same points rebuilt from a SignedPatterns decomposition: per code one 4-byte entry (a
// 256 KiB table against the grid's 2 MiB) and its pattern (8 KiB); the register's two patterns,
// the sign bits of its negative coordinates flipped, plus +-shift -- exact in float (checked
// point by point when the decomposition was made), so the same bits as the table.
struct Oct16PatternLoader {
  static constexpr int64_t kGroupBytes = 48;
  const float* pat;
  const uint32_t* code;
  uint32_t last;
  __m512 pos, neg;
  __m512i sign_bit = _mm512_set1_epi32(int(0x80000000u));
  Oct16PatternLoader(const SignedPatterns& sp, int64_t n)
      : pat(sp.pat.data()), code(sp.code.data()), last(uint32_t(n - 1)), pos(_mm512_set1_ps(sp.shift)),
        neg(_mm512_set1_ps(-sp.shift)) {}
  uint32_t entry(const uint8_t* c) const {
    const uint32_t k = uint32_t(c[0] | c[1] << 8);
    return code[k < last ? k : last];
  }
  void operator()(const uint8_t* codes, __m512 f, __m512* v) const {
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) {
      const uint32_t t0 = entry(codes + 4 * i), t1 = entry(codes + 4 * i + 2);
      const __m256d a0 = _mm256_castps_pd(_mm256_loadu_ps(pat + 8 * (t0 & 255)));
      const __m256d a1 = _mm256_castps_pd(_mm256_loadu_ps(pat + 8 * (t1 & 255)));
      __m512i a = _mm512_castpd_si512(_mm512_insertf64x4(_mm512_castpd256_pd512(a0), a1, 1));
      a = _mm512_mask_xor_epi32(a, __mmask16(((t0 >> 8) & 0xFF) | (t1 & 0xFF00)), a, sign_bit);
      const __mmask16 sneg = __mmask16(((t0 >> 16) & 0xFF) | ((t1 >> 8) & 0xFF00));
      const __m512 p = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_mask_blend_ps(sneg, pos, neg));
      v[i] = _mm512_mul_ps(p, f);
    }
  }
};

// Rows of groups of 192 = 12 x 16 values without sign flips, fused in registers: per group the
// 12 registers of scaled grid points (the loader), the FWHT of each (H_16), then the mixing with
// H_12 in the scalar reference's order (T = v_0 + ... + v_11, then T - 2 S_i with S_i = 0 + the
// v_a of row i's -1 entries in increasing a, from `plan`); then y + x (Add) or x stored. Groups
// whose stored scale is 0 are not rotated, as in HiggsCodec::decode. Same bits as the scalar
// gather, scale, HadamardRotation::inverse(.., 1.0f) and (Add) the element-wise sum.
template <bool Add, class Loader>
void rebuild_192(const Loader& load, const MixPlan& plan, const uint8_t* in, int64_t rows, int64_t row_bytes,
                 int64_t ng, float* y) {
  constexpr int64_t g = 192;
  const float inv_sqrt_g = float(1.0 / std::sqrt(double(g)));
  const __m512 two = _mm512_set1_ps(2.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * row_bytes;
    const uint8_t* codes = o + 2 * ng;
    float* yr = y + r * ng * g;
    for (int64_t k = 0; k < ng; ++k) {
      const float rms = _cvtsh_ss(uint16_t(o[2 * k] | o[2 * k + 1] << 8));
      const __m512 f = _mm512_set1_ps(rms * inv_sqrt_g);
      __m512 v[12];
      load(codes + k * Loader::kGroupBytes, f, v);
      float* yg = yr + k * g;
      if (rms != 0.0f) {
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) v[i] = fwht16_avx512(v[i]);
        __m512 t = v[0];
        _Pragma("GCC unroll 11") for (int a = 1; a < 12; ++a) t = _mm512_add_ps(t, v[a]);
        __m512 out[12];
        for (int i = 0; i < 12; ++i) {
          __m512 s = _mm512_setzero_ps();
          for (int j = 0; j < plan.nneg[i]; ++j) s = _mm512_add_ps(s, v[plan.neg[i][j]]);
          out[i] = _mm512_fnmadd_ps(two, s, t);  // t - 2s, one rounding (2s is exact)
        }
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) v[i] = out[i];
      }
      if constexpr (Add) {
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i)
          _mm512_storeu_ps(yg + 16 * i, _mm512_add_ps(_mm512_loadu_ps(yg + 16 * i), v[i]));
      } else {
        _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) _mm512_storeu_ps(yg + 16 * i, v[i]);
      }
    }
  }
}

template <class Loader>
void rebuild_192(bool add, const Loader& load, const uint8_t* in, int64_t rows, int64_t row_bytes, int64_t ng,
                 float* y) {
  const MixPlan& plan = mix_plan(12);
  if (add) return rebuild_192<true>(load, plan, in, rows, row_bytes, ng, y);
  rebuild_192<false>(load, plan, in, rows, row_bytes, ng, y);
}

}  // namespace

bool higgs_pairs_avx512_fits(int64_t d, int64_t n, int code_bits, int64_t group) {
  return d == 2 && ((n == 16 && code_bits == 4) || (n == 64 && code_bits == 6) || (n == 256 && code_bits == 8)) &&
         group % 32 == 0;
}

void higgs_decode_pairs_avx512(const float* points, int64_t n, const uint8_t* in, int64_t rows, int64_t row_bytes,
                               int64_t ng, int64_t group, float* x) {
  if (n == 16) return decode_pairs<16, 4>(points, in, rows, row_bytes, ng, group, x);
  if (n == 64) return decode_pairs<64, 6>(points, in, rows, row_bytes, ng, group, x);
  decode_pairs<256, 8>(points, in, rows, row_bytes, ng, group, x);
}

bool higgs_group192_avx512_fits(int64_t d, int64_t n, int code_bits) {
  return higgs_pairs_avx512_fits(d, n, code_bits, 192) || (d == 4 && n == 16 && code_bits == 4) ||
         (d == 8 && code_bits == 16);
}

void higgs_rebuild192_avx512(bool add, const float* points, int64_t d, int64_t n, const SignedPatterns* sp,
                             const uint8_t* in, int64_t rows, int64_t row_bytes, int64_t ng, float* y) {
  if (d == 8 && sp != nullptr) return rebuild_192(add, Oct16PatternLoader(*sp, n), in, rows, row_bytes, ng, y);
  if (d == 8) return rebuild_192(add, Oct16Loader(points, n), in, rows, row_bytes, ng, y);
  if (d == 4) return rebuild_192(add, Quad16Loader(points), in, rows, row_bytes, ng, y);
  if (n == 16) return rebuild_192(add, PairsLoader<16, 4>(points), in, rows, row_bytes, ng, y);
  if (n == 64) return rebuild_192(add, PairsLoader<64, 6>(points), in, rows, row_bytes, ng, y);
  rebuild_192(add, PairsLoader<256, 8>(points), in, rows, row_bytes, ng, y);
}

}  // namespace aquakv::detail
