// q8_0 / q4_0 / q4_1 codecs: rows of dim values as dim/32 ggml blocks (format in quant/block_codecs.h).
#include "aquakv/ops/ggml_quantize.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/quant/block_codecs.h"
#include "aquakv/util/error.h"

namespace aquakv {

namespace {

GgmlType type_of(std::string_view kind) {
  if (kind == "q8_0") return GgmlType::Q8_0;
  if (kind == "q4_0") return GgmlType::Q4_0;
  if (kind == "q4_1") return GgmlType::Q4_1;
  fail("codec '{}': unknown ggml block type (expected q8_0, q4_0 or q4_1)", kind);
}

int64_t checked_row_bytes(std::string_view kind, int64_t dim) {
  const GgmlType t = type_of(kind);
  if (dim < 1 || dim % 32 != 0) fail("codec '{}': width must be a positive multiple of 32, got {}", kind, dim);
  return ggml_row_bytes(t, dim);
}

}  // namespace

GgmlBlockCodec::GgmlBlockCodec(std::string_view kind, int64_t dim)
    : Codec(std::string(kind), dim, 1, checked_row_bytes(kind, dim)), type_(uint32_t(type_of(kind))) {}

void GgmlBlockCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  // Rows are whole blocks, so the rows form one long run of blocks.
  quantize_row_ref(GgmlType(type_), x, out, rows * dim());
}

void GgmlBlockCodec::decode(const uint8_t* in, int64_t rows, float* x) const {
  dequantize_row(GgmlType(type_), in, x, rows * dim());
}

}  // namespace aquakv
