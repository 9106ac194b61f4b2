// GgufFile: a read-only, memory-mapped GGUF (v2/v3) file. Owns: parsing and validating the
// header, metadata key/values (all value types, arrays included), tensor infos and alignment,
// and giving out views of tensor data. Not: model semantics (engine/model.h) or
// dequantization (ops/ggml_types.h).
// Every count, offset and size is checked against the file size and for overflow before use;
// problems throw aquakv::Error naming the file, the field, the expected and the actual value.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "aquakv/ops/ggml_types.h"

namespace aquakv {

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

// Arrays of at least this many scalars or strings (the tokenizer's vocabulary, scores, types
// and merges) are checked when the file opens but not copied: their elements are decoded from
// the file's bytes each time they are read, since a copy of ~100k elements would hold ~7 MiB for
// the life of the model. Shorter arrays and arrays of arrays are held as elements.
inline constexpr uint64_t kGgufLazyArrayItems = 1024;

// One metadata value. Arrays hold elements of a single type; arrays of arrays are allowed.
struct GgufValue {
  struct Array {
    GgufValueType elem_type;
    std::vector<GgufValue> items;  // the elements; empty when `raw` is set
    // A long array (>= kGgufLazyArrayItems elements) left in the file: `count` elements encoded from `raw`,
    // which points into the GgufFile's bytes (valid while the file is open).
    const uint8_t* raw = nullptr;
    uint64_t count = 0;
    uint64_t size() const { return raw != nullptr ? count : items.size(); }
    // Calls fn(element) for every element in order (decoded from `raw` when it is set).
    template <typename Fn>
    void for_each(Fn&& fn) const;
  };
  GgufValueType type;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> v;
};

// The element of type `type` encoded at p (checked when the file opened), advancing p past it:
// what GgufValue::Array::for_each decodes long arrays with.
GgufValue gguf_decode_element(GgufValueType type, const uint8_t*& p);

template <typename Fn>
void GgufValue::Array::for_each(Fn&& fn) const {
  if (raw == nullptr) {
    for (const GgufValue& item : items) fn(item);
    return;
  }
  const uint8_t* p = raw;
  for (uint64_t i = 0; i < count; ++i) fn(gguf_decode_element(elem_type, p));
}

// "U32", "STRING", "ARRAY", ...; "?" for values outside the enum.
std::string_view gguf_value_type_name(GgufValueType type);

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // ggml order: shape[0] is the contiguous (row) dimension
  GgmlType type;               // a supported type unless opened with allow_unsupported_types
  uint64_t offset;             // relative to the start of the tensor data section
  int64_t n_values;            // product of shape
  int64_t n_bytes;             // bytes of data in the file
  const uint8_t* data;         // points into the mapping
};

struct GgufOpenOptions {
  // Accept tensors of ggml types aquakv knows by geometry but cannot dequantize (IQ*, TQ*,
  // I8..I64, ...; see ggml_type_info). For inspection only: dequantize_row must not be called
  // on them. Unknown type ids are refused either way.
  bool allow_unsupported_types = false;
};

class GgufFile {
 public:
  // Opens and validates `path`. Throws Error on any problem.
  static std::unique_ptr<GgufFile> open(const std::string& path, GgufOpenOptions options = {});
  // Parses an in-memory image (copied; used by the fuzzer and tests); `name` appears in errors.
  static std::unique_ptr<GgufFile> from_memory(std::span<const uint8_t> bytes,
                                               const std::string& name,
                                               GgufOpenOptions options = {});
  virtual ~GgufFile() = default;

  virtual const std::string& path() const = 0;
  virtual uint64_t file_size() const = 0;
  virtual uint64_t data_offset() const = 0;  // start of the tensor data section in the file
  virtual uint32_t version() const = 0;
  virtual uint64_t alignment() const = 0;
  virtual const std::vector<std::pair<std::string, GgufValue>>& metadata() const = 0;
  virtual const std::vector<GgufTensorInfo>& tensors() const = 0;

  // Lookups; nullptr when absent.
  virtual const GgufValue* find(std::string_view key) const = 0;
  virtual const GgufTensorInfo* find_tensor(std::string_view name) const = 0;

  // Typed getters. The *_or variants return the default when the key is absent; all throw
  // Error naming the key when it is present with an incompatible type.
  std::string get_string(std::string_view key) const;
  std::optional<std::string> get_string_opt(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;  // any integer type >= 0
  uint64_t get_u64_or(std::string_view key, uint64_t dflt) const;
  double get_f64_or(std::string_view key, double dflt) const;  // any numeric type
  bool get_bool_or(std::string_view key, bool dflt) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<double> get_f64_array(std::string_view key) const;   // any numeric elements
  std::vector<int64_t> get_i64_array(std::string_view key) const;  // any integer elements
  // Drops the resident pages of [p, p + n) of a mapped file's data (no-op for an in-memory
  // image): for tensors whose bytes were copied into another layout (engine/model.h).
  virtual void release_pages(const uint8_t* p, uint64_t n) const = 0;
  // Drops the resident pages of the header and metadata, [0, data_offset()) (no-op for an
  // in-memory image): for when the long arrays left in the file (kGgufLazyArrayItems) were read
  // into tables of their own (the tokenizer's). A later read maps them in again.
  virtual void release_metadata_pages() const = 0;
  // The tensor; throws Error naming it when absent.
  const GgufTensorInfo& tensor(std::string_view name) const;
};

}  // namespace aquakv
