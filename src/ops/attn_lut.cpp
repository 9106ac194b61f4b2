// Table build, scalar reference and dispatch of ops/attn_lut.h (AVX2: attn_lut_avx2.cpp). The
// reference defines the bits every level reproduces.
#include "aquakv/ops/attn_lut.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aquakv/util/check.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {

bool attn_lut_supported(int64_t P) { return P % 4 == 0 && P >= 4 && P <= 256; }

void attn_lut_build(const float* q, int64_t M, int64_t P, const float* points, uint8_t* tab,
                    float* delta, float* bias) {
  AQUAKV_CHECK(attn_lut_supported(P), "lookup tables need P % 4 == 0 and 4 <= P <= 256");
  double L[16];
  for (int64_t r = 0; r < M; ++r) {
    const float* qr = q + r * 2 * P;
    uint8_t* tr = tab + r * attn_lut_row_bytes(P);
    // The step: the widest pair's range over 255 levels (exact entries in double first).
    double range = 0;
    for (int64_t p = 0; p < P; ++p) {
      double lo = INFINITY, hi = -INFINITY;
      for (int k = 0; k < 16; ++k) {
        const double v = double(qr[2 * p]) * points[2 * k] + double(qr[2 * p + 1]) * points[2 * k + 1];
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      range = std::max(range, hi - lo);
    }
    const float d = range > 0 ? float(range / 255.0) : 1.0f;
    double b_sum = 0;
    for (int64_t p = 0; p < P; ++p) {
      double lo = INFINITY;
      for (int k = 0; k < 16; ++k) {
        L[k] = double(qr[2 * p]) * points[2 * k] + double(qr[2 * p + 1]) * points[2 * k + 1];
        lo = std::min(lo, L[k]);
      }
      b_sum += lo;
      for (int k = 0; k < 16; ++k) {
        const double t = std::nearbyint((L[k] - lo) / double(d));
        tr[attn_lut_offset(p, k)] = uint8_t(std::clamp(t, 0.0, 255.0));
      }
    }
    delta[r] = d;
    bias[r] = float(b_sum);
  }
}

void attn_scores_lut_ref(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                         int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t,
                         int64_t rs, float mult, float* s, int64_t ss) {
  for (int64_t j = 0; j < t; ++j) {
    const uint8_t* c = codes + j * rs;
    uint16_t h;
    std::memcpy(&h, scales + j * rs, 2);
    const float f = fp16_to_fp32(h) * mult;
    for (int64_t r = 0; r < M; ++r) {
      const uint8_t* tr = tab + r * attn_lut_row_bytes(P);
      uint32_t u = 0;
      for (int64_t p = 0; p < P; ++p) {
        const int code = p % 2 == 0 ? c[p / 2] & 15 : c[p / 2] >> 4;
        u += tr[attn_lut_offset(p, code)];
      }
      s[r * ss + j] = std::fma(delta[r], float(u), bias[r]) * f;
    }
  }
}

void attn_scores_lut(const uint8_t* tab, const float* delta, const float* bias, int64_t M,
                     int64_t P, const uint8_t* codes, const uint8_t* scales, int64_t t, int64_t rs,
                     float mult, float* s, int64_t ss) {
  AQUAKV_CHECK(attn_lut_supported(P), "lookup tables need P % 4 == 0 and 4 <= P <= 256");
  int64_t done = 0;
  if (P % 32 == 0 && simd_at_least(SimdLevel::kAvx2)) {
    done = t - t % 16;
    detail::attn_scores_lut_avx2(tab, delta, bias, M, P, codes, scales, done, rs, mult, s, ss);
  }
  if (done < t)
    attn_scores_lut_ref(tab, delta, bias, M, P, codes + done * rs, scales + done * rs, t - done, rs, mult,
                        s + done, ss);
}

}  // namespace aquakv
