// Scalar reference kernels of ops/qdot.h and the run-time dispatch to the AVX2 and AVX-512
// versions (a kernel without an AVX-512 version runs its AVX2 one at that level).
#include "aquakv/util/check.h"
#include "aquakv/ops/qdot.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"

namespace aquakv {
namespace {

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// Integer sum of unsigned 4-bit codes (low nibbles = values 0..15, high = 16..31) times q.
int32_t isum_nibbles(const uint8_t* qs, const int8_t* q) {
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) s += int32_t(qs[j] & 15) * q[j] + int32_t(qs[j] >> 4) * q[j + 16];
  return s;
}

// Same for 5-bit codes: the fifth bit of value j is bit j of the 32-bit qh.
int32_t isum_5bit(const uint8_t* qh4, const uint8_t* qs, const int8_t* q) {
  uint32_t qh;
  std::memcpy(&qh, qh4, 4);
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) {
    const int32_t lo = int32_t(qs[j] & 15) | int32_t((qh >> j) & 1u) << 4;
    const int32_t hi = int32_t(qs[j] >> 4) | int32_t((qh >> (j + 16)) & 1u) << 4;
    s += lo * q[j] + hi * q[j + 16];
  }
  return s;
}

}  // namespace

bool qdot_uses_q8(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1:
    case GgmlType::Q8_0:
      return true;
    default:
      return false;
  }
}

void quantize_q8_ref(const float* x, Q8Act* out, int64_t n) {
  AQUAKV_CHECK(n % 32 == 0, "q8 activations come in blocks of 32");
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int32_t q = int32_t(std::nearbyint(xb[j] * id));  // default mode: nearest-even
      out[b].q[j] = int8_t(q);
      sum += q;
    }
    out[b].d = d;
    out[b].s = d * float(sum);
  }
}

void quantize_q8(const float* x, Q8Act* out, int64_t n) {
  if (simd_at_least(SimdLevel::kAvx2)) return detail::quantize_q8_avx2(x, out, n);
  quantize_q8_ref(x, out, n);
}

namespace {

// Block b's contribution to the dot of an integer-path row with activations a (see qdot.h).
float block_term(GgmlType type, const uint8_t* p, int64_t b, const Q8Act& a) {
  switch (type) {
    case GgmlType::Q4_0: {  // value = dw*(c-8)
      const uint8_t* blk = p + 18 * b;
      const float dw = half_at(blk);
      return dw * a.d * float(isum_nibbles(blk + 2, a.q)) - 8.0f * dw * a.s;
    }
    case GgmlType::Q4_1: {  // value = dw*c + m
      const uint8_t* blk = p + 20 * b;
      return half_at(blk) * a.d * float(isum_nibbles(blk + 4, a.q)) + half_at(blk + 2) * a.s;
    }
    case GgmlType::Q5_0: {  // value = dw*(c-16)
      const uint8_t* blk = p + 22 * b;
      const float dw = half_at(blk);
      return dw * a.d * float(isum_5bit(blk + 2, blk + 6, a.q)) - 16.0f * dw * a.s;
    }
    case GgmlType::Q5_1: {  // value = dw*c + m
      const uint8_t* blk = p + 24 * b;
      return half_at(blk) * a.d * float(isum_5bit(blk + 4, blk + 8, a.q)) + half_at(blk + 2) * a.s;
    }
    case GgmlType::Q8_0: {  // value = dw*c, c signed
      const uint8_t* blk = p + 34 * b;
      int32_t s = 0;
      for (int j = 0; j < 32; ++j) s += int32_t(int8_t(blk[2 + j])) * a.q[j];
      return half_at(blk) * a.d * float(s);
    }
    default:
      AQUAKV_CHECK(false, "qdot_q8_ref: not an integer-path type");
      return 0.0f;
  }
}

}  // namespace

float qdot_q8_ref(GgmlType type, const void* row, const Q8Act* x, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  float acc = 0.0f;
  for (int64_t b = 0; b < n / 32; ++b) acc += block_term(type, p, b, x[b]);
  return acc;
}

void qdot_q8_rows_ref(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                      float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / 32;
  std::fill(out, out + n_act, 0.0f);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t t = 0; t < n_act; ++t) out[t] += block_term(type, p, b, x[t * nb + b]);
  }
}

float qdot_q8(GgmlType type, const void* row, const Q8Act* x, int64_t n) {
  if (simd_at_least(SimdLevel::kAvx512)) return detail::qdot_q8_avx512(type, row, x, n);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::qdot_q8_avx2(type, row, x, n);
  return qdot_q8_ref(type, row, x, n);
}

void qdot_q8_rows(GgmlType type, const void* row, const Q8Act* x, int64_t n, int64_t n_act,
                  float* out) {
  if (simd_at_least(SimdLevel::kAvx512)) return detail::qdot_q8_rows_avx512(type, row, x, n, n_act, out);
  if (simd_at_least(SimdLevel::kAvx2)) return detail::qdot_q8_rows_avx2(type, row, x, n, n_act, out);
  qdot_q8_rows_ref(type, row, x, n, n_act, out);
}

void qdot_q8_multirow_ref(GgmlType type, const void* rows, int64_t row_bytes, int64_t n_rows,
                          const Q8Act* x, int64_t n, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(rows);
  for (int64_t r = 0; r < n_rows; ++r) out[r] = qdot_q8_ref(type, p + r * row_bytes, x, n);
}

void qdot_q8_multirow(GgmlType type, const void* rows, int64_t row_bytes, int64_t n_rows,
                      const Q8Act* x, int64_t n, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(rows);
  for (int64_t r = 0; r < n_rows; ++r) out[r] = qdot_q8(type, p + r * row_bytes, x, n);
}

float qdot_f32_ref(GgmlType type, const void* row, const float* x, int64_t n) {
  std::vector<float> w(static_cast<size_t>(n));
  dequantize_row_ref(type, row, w.data(), n);
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += double(w[i]) * double(x[i]);
  return float(acc);
}

float qdot_f32(GgmlType type, const void* row, const float* x, int64_t n) {
  if (type == GgmlType::F32) return dot_f32(static_cast<const float*>(row), x, n);
  // Dequantize a chunk (a multiple of every block size) at a time into a stack buffer.
  constexpr int64_t kChunk = 512;
  const auto info = ggml_type_info(uint32_t(type));
  AQUAKV_CHECK(info.has_value(), "a known ggml type");
  const uint8_t* p = static_cast<const uint8_t*>(row);
  float buf[kChunk];
  float acc = 0.0f;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    dequantize_row(type, p + i / info->block_values * info->block_bytes, buf, m);
    acc += dot_f32(buf, x + i, m);
  }
  return acc;
}

float dot_f32(const float* a, const float* b, int64_t n) {
  if (simd_at_least(SimdLevel::kAvx2)) return detail::dot_f32_avx2(a, b, n);
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

}  // namespace aquakv
