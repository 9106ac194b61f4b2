// Rotated ggml block codecs (quant/rotated_block_codec.h): x -> blocks(R x) and back,
// R = H_h / sqrt(h) on every head of h channels.
#include "aquakv/quant/rotated_block_codec.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

constexpr int64_t kChunkRows = 256;  // rows rotated per pass: bounds the scratch buffer

GgmlType type_of(std::string_view kind) {
  if (kind == "q8_0") return GgmlType::Q8_0;
  if (kind == "q4_0") return GgmlType::Q4_0;
  if (kind == "q4_1") return GgmlType::Q4_1;
  fail("codec '{}r': unknown rotated block type (expected q8_0r, q4_0r or q4_1r)", kind);
}

// The default head: the largest power of two <= 128 dividing dim (64 for the default model's
// 3 x 64 = 192 channels).
int64_t default_head(int64_t dim) {
  int64_t h = 128;
  while (h > 1 && dim % h != 0) h /= 2;
  return h;
}

int64_t checked_head(std::string_view kind, int64_t dim, int64_t head) {
  type_of(kind);
  if (dim < 1 || dim % 32 != 0)
    fail("codec '{}r': width must be a positive multiple of 32, got {}", kind, dim);
  const int64_t h = head == 0 ? default_head(dim) : head;
  if (h < 32 || h % 32 != 0 || dim % h != 0 || !hadamard_supported(h))
    fail("codec '{}r:h{}': head size must be a multiple of 32 dividing the width {} with a "
         "Hadamard matrix (2^k, 12*2^k or 20*2^k)", kind, h, dim);
  return h;
}

// Checks kind, width and head (checked_head) before ggml_row_bytes may see a bad width: the
// constructor's arguments are evaluated in no fixed order.
int64_t checked_row_bytes(std::string_view kind, int64_t dim, int64_t head) {
  checked_head(kind, dim, head);
  return ggml_row_bytes(type_of(kind), dim);
}

}  // namespace

RotatedBlockCodec::RotatedBlockCodec(std::string_view kind, int64_t dim, int64_t head)
    : Codec(std::string(kind) + "r:h" + std::to_string(checked_head(kind, dim, head)), dim, 1,
            checked_row_bytes(kind, dim, head)),
      type_(uint32_t(type_of(kind))),
      rot_(checked_head(kind, dim, head)) {}

void RotatedBlockCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  const int64_t h = rot_.size();
  const float s = float(1.0 / std::sqrt(double(h)));
  std::vector<float> t(size_t(std::min(rows, kChunkRows) * dim()));
  for (int64_t r0 = 0; r0 < rows; r0 += kChunkRows) {
    const int64_t n = std::min(kChunkRows, rows - r0) * dim();
    std::copy(x + r0 * dim(), x + r0 * dim() + n, t.begin());
    rot_.forward(t.data(), n / h);  // H x per head
    for (int64_t i = 0; i < n; ++i) t[size_t(i)] *= s;
    quantize_row_ref(GgmlType(type_), t.data(), out + encoded_bytes(r0), n);
  }
}

void RotatedBlockCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  decode_inner(in, rows, x);
  inner_to_rows(x, rows);
}

void RotatedBlockCodec::decode_inner(const uint8_t* in, int64_t rows, float* u) const {
  dequantize_row(GgmlType(type_), in, u, rows * dim());
}

void RotatedBlockCodec::inner_to_rows(float* u, int64_t rows) const {
  // R^T = R (H is symmetric): y -> H y / sqrt(h) per head.
  const int64_t h = rot_.size();
  rot_.inverse(u, rows * dim() / h, float(1.0 / std::sqrt(double(h))));
}

void RotatedBlockCodec::transpose_to_inner(float* q, int64_t rows) const { inner_to_rows(q, rows); }

}  // namespace aquakv
