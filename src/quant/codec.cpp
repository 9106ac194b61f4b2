// Codec base-class helpers and the fp16 codec.
#include "aquakv/quant/codec.h"

#include "aquakv/util/error.h"

#include <algorithm>
#include <vector>

#include "aquakv/quant/block_codecs.h"
#include "aquakv/util/cpu.h"
#include "aquakv/util/fp16.h"
#include "aquakv/ops/half_rows.h"

namespace aquakv {



void Codec::decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const {
  // Decode a few blocks at a time into a small float buffer that stays in cache.
  const int64_t step = std::max<int64_t>(1, 4096 / (block_rows_ * dim_)) * block_rows_;
  thread_local std::vector<float> buf;
  buf.resize(size_t(step * dim_));
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t m = std::min(step, rows - r);
    decode(in + encoded_bytes(r), m, buf.data());
    floats_to_halves(buf.data(), m * dim_, x + r * dim_);
  }
}

void Codec::decode_add(const uint8_t* in, int64_t rows, float* y) const {
  const int64_t step = std::max<int64_t>(1, 4096 / (block_rows_ * dim_)) * block_rows_;
  thread_local std::vector<float> buf;
  buf.resize(size_t(std::min(step, rows) * dim_));
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t m = std::min(step, rows - r);
    decode(in + encoded_bytes(r), m, buf.data());
    float* yr = y + r * dim_;
    for (int64_t i = 0; i < m * dim_; ++i) yr[i] = yr[i] + buf[size_t(i)];
  }
}

void Codec::decode_inner(const uint8_t*, int64_t, float*) const {
  fail("codec {}: no inner basis", spec());
}
void Codec::inner_to_rows(float*, int64_t) const { fail("codec {}: no inner basis", spec()); }
void Codec::transpose_to_inner(float*, int64_t) const { fail("codec {}: no inner basis", spec()); }


Fp16Codec::Fp16Codec(int64_t dim) : Codec("fp16", dim, 1, 2 * dim) {}

// Little-endian hosts only (as the rest of aquakv): a half row is stored as its bytes.
void Fp16Codec::encode(const float* x, int64_t rows, uint8_t* out) const {
  floats_to_halves(x, rows * dim(), reinterpret_cast<uint16_t*>(out));
}

void Fp16Codec::decode(const uint8_t* in, int64_t rows, float* x) const {
  halves_to_floats(reinterpret_cast<const uint16_t*>(in), rows * dim(), x);
}

void Fp16Codec::decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const {
  std::memcpy(x, in, size_t(rows * dim() * 2));
}

double codec_relative_mse(const Codec& codec, const float* x, int64_t rows) {
  const size_t n = size_t(rows * codec.dim());
  std::vector<uint8_t> b(size_t(codec.encoded_bytes(rows)));
  std::vector<float> y(n);
  codec.encode(x, rows, b.data());
  codec.decode(b.data(), rows, y.data());
  double e = 0, s = 0;
  for (size_t i = 0; i < n; ++i) {
    e += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    s += double(x[i]) * x[i];
  }
  return s > 0 ? e / s : 0.0;
}

}  // namespace aquakv
