// GGUF v2/v3 parser (see engine/gguf.h). The file is read through a bounds-checked cursor:
// every length or count read from the file is compared with the bytes that remain before any
// allocation or pointer arithmetic, and every size computed from file values is checked for
// 64-bit overflow. Layout (little-endian):
//   header:  magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv:      string key | u32 value_type | value          (string = u64 length + bytes)
//            array value = u32 elem_type | u64 count | count elements (arrays may nest)
//   tensor:  string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset
//   padding to general.alignment (default 32), then the tensor data section; tensor offsets
//   are relative to its start and multiples of the alignment.
#include "aquakv/engine/gguf.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <numeric>

#include <fmt/ranges.h>

#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv {
namespace {

constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 8;         // nesting of arrays in arrays (recursion bound)
constexpr uint64_t kMaxKeyBytes = 65535;  // GGUF keys are at most 2^16 - 1 bytes
// Smallest possible encodings, used to bound counts by the bytes left before reserving memory:
// a kv is key length (8) + >= 1 key byte + type (4) + >= 1 value byte; a tensor info is name
// length (8) + >= 1 name byte + n_dims (4) + >= 1 dim (8) + type (4) + offset (8).
constexpr uint64_t kMinKvBytes = 14;
constexpr uint64_t kMinTensorInfoBytes = 33;

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::F64); }

// Encoded size of a scalar of type t; 0 for STRING/ARRAY (variable).
uint64_t scalar_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    default: return 0;
  }
}

// Smallest encoding of one element of type t (string: its length field; array: type + count).
uint64_t min_element_bytes(GgufValueType t) {
  if (t == GgufValueType::STRING) return 8;
  if (t == GgufValueType::ARRAY) return 12;
  return scalar_bytes(t);
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (s.size() > 64) out += "...";
  return out;
}

// Name of the field being read, for error messages only. It is turned into a string only when
// an error is reported, so reading the ~100k elements of a tokenizer array builds no strings.
struct FieldName {
  FieldName(const char* b) : base(b) {}                          // NOLINT: implicit on purpose
  FieldName(const std::string& b) : base(b) {}                   // NOLINT
  FieldName(std::string_view b, int64_t i, std::string_view s = {}) : base(b), index(i), suffix(s) {}
  std::string str() const {
    std::string out(base);
    if (index >= 0) out += "[" + std::to_string(index) + "]";
    out += suffix;
    return out;
  }
  std::string_view base;
  int64_t index = -1;
  std::string_view suffix;
};

// Bounds-checked little-endian cursor over the file image.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& name)
      : base_(base), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const std::string& name() const { return name_; }

  // Throws unless n more bytes exist.
  void need(uint64_t n, const FieldName& field) const {
    if (n > left()) {
      fail("{}: {}: expected {} more bytes at offset {}, got {} (file truncated: {} bytes)",
           name_, field.str(), n, pos_, left(), size_);
    }
  }

  template <typename T>
  T read(const FieldName& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const FieldName& field) {
    const uint64_t len = string_length(field);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }
  // Checks a string as read_string does and moves past it.
  void skip_string(const FieldName& field) { pos_ += string_length(field); }

  const uint8_t* here() const { return base_ + pos_; }
  void skip(uint64_t n, const FieldName& field) {
    need(n, field);
    pos_ += n;
  }

 private:
  // Reads a string's length field and checks that many bytes follow.
  uint64_t string_length(const FieldName& field) {
    if (8 > left()) need(8, FieldName(field.str() + " length"));
    const uint64_t len = read<uint64_t>(field);
    if (len > left()) {
      fail("{}: {} length: expected at most the {} bytes left in the file, got {}", name_,
           field.str(), left(), len);
    }
    return len;
  }

  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

GgufValue read_value(Cursor& c, GgufValueType type, const FieldName& field, int depth);

GgufValue read_array(Cursor& c, const FieldName& name, int depth) {
  const std::string field = name.str();  // once per array, not per element
  if (depth >= kMaxArrayDepth) {
    fail("{}: {}: expected arrays nested at most {} deep, got deeper nesting", c.name(), field,
         kMaxArrayDepth);
  }
  const uint32_t et = c.read<uint32_t>(field + " element type");
  if (!valid_value_type(et)) {
    fail("{}: {} element type: expected a GGUF value type 0..12, got {}", c.name(), field, et);
  }
  const auto elem = static_cast<GgufValueType>(et);
  const uint64_t count = c.read<uint64_t>(field + " count");
  const uint64_t min_bytes = min_element_bytes(elem);
  if (count > c.left() / min_bytes) {
    fail("{}: {} count: expected at most {} {} elements in the {} bytes left, got {}", c.name(),
         field, c.left() / min_bytes, gguf_value_type_name(elem), c.left(), count);
  }
  GgufValue::Array arr{elem, {}};
  if (elem != GgufValueType::ARRAY && count >= kGgufLazyArrayItems) {
    // Long array: checked here exactly as the element reads below would check it, then left
    // in the file (engine/gguf.h).
    arr.raw = c.here();
    arr.count = count;
    if (elem == GgufValueType::STRING) {
      for (uint64_t i = 0; i < count; ++i) c.skip_string(FieldName(field, int64_t(i)));
    } else if (elem == GgufValueType::BOOL) {
      for (uint64_t i = 0; i < count; ++i) read_value(c, elem, FieldName(field, int64_t(i)), depth + 1);
    } else {
      c.skip(count * scalar_bytes(elem), FieldName(field, 0));
    }
    return GgufValue{GgufValueType::ARRAY, std::move(arr)};
  }
  arr.items.reserve(size_t(count));
  for (uint64_t i = 0; i < count; ++i) {
    arr.items.push_back(read_value(c, elem, FieldName(field, int64_t(i)), depth + 1));
  }
  return GgufValue{GgufValueType::ARRAY, std::move(arr)};
}

GgufValue read_value(Cursor& c, GgufValueType type, const FieldName& field, int depth) {
  switch (type) {
    case GgufValueType::U8: return {type, uint64_t(c.read<uint8_t>(field))};
    case GgufValueType::U16: return {type, uint64_t(c.read<uint16_t>(field))};
    case GgufValueType::U32: return {type, uint64_t(c.read<uint32_t>(field))};
    case GgufValueType::U64: return {type, c.read<uint64_t>(field)};
    case GgufValueType::I8: return {type, int64_t(c.read<int8_t>(field))};
    case GgufValueType::I16: return {type, int64_t(c.read<int16_t>(field))};
    case GgufValueType::I32: return {type, int64_t(c.read<int32_t>(field))};
    case GgufValueType::I64: return {type, c.read<int64_t>(field)};
    case GgufValueType::F32: return {type, double(c.read<float>(field))};
    case GgufValueType::F64: return {type, c.read<double>(field)};
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(field);
      if (b > 1) fail("{}: {}: expected a BOOL byte 0 or 1, got {}", c.name(), field.str(), b);
      return {type, b == 1};
    }
    case GgufValueType::STRING: return {type, c.read_string(field)};
    case GgufValueType::ARRAY: return read_array(c, field, depth);
  }
  fail("{}: {}: expected a GGUF value type 0..12, got {}", c.name(), field.str(),
       static_cast<uint32_t>(type));
}

// Owns the bytes: a read-only mapping of a file (util/file_io.h), or a copy of an image.
class Storage {
 public:
  void map_file(const std::string& path) { map_.open(path, ""); }
  void copy(std::span<const uint8_t> bytes) { copy_.assign(bytes.begin(), bytes.end()); }

  const uint8_t* data() const { return map_.size() > 0 ? map_.data() : copy_.data(); }
  uint64_t size() const { return map_.size() > 0 ? map_.size() : copy_.size(); }
  void release(const uint8_t* p, uint64_t n) const { map_.release(p, n); }  // a copy: kept

 private:
  MappedFile map_;
  std::vector<uint8_t> copy_;
};

class GgufImpl final : public GgufFile {
 public:
  GgufImpl(std::string name, GgufOpenOptions options)
      : path_(std::move(name)), options_(options) {}

  Storage& storage() { return storage_; }
  void parse();

  const std::string& path() const override { return path_; }
  uint64_t file_size() const override { return storage_.size(); }
  uint64_t data_offset() const override { return data_offset_; }
  uint32_t version() const override { return version_; }
  uint64_t alignment() const override { return alignment_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const override {
    return metadata_;
  }
  const std::vector<GgufTensorInfo>& tensors() const override { return tensors_; }
  void release_pages(const uint8_t* p, uint64_t n) const override { storage_.release(p, n); }
  void release_metadata_pages() const override { storage_.release(storage_.data(), data_offset_); }

  const GgufValue* find(std::string_view key) const override {
    auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }
  const GgufTensorInfo* find_tensor(std::string_view name) const override {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

 private:
  void parse_header(Cursor& c, uint64_t& n_tensors, uint64_t& n_kv);
  void parse_metadata(Cursor& c, uint64_t n_kv);
  void parse_alignment();
  void parse_tensor_info(Cursor& c, uint64_t index);
  void place_tensors();

  std::string path_;
  GgufOpenOptions options_;
  Storage storage_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> key_index_, tensor_index_;
};

void GgufImpl::parse_header(Cursor& c, uint64_t& n_tensors, uint64_t& n_kv) {
  if (c.left() < 4) {
    fail("{}: header.magic: expected 'GGUF', got a {}-byte file", path_, c.left());
  }
  const uint32_t magic = c.read<uint32_t>("header.magic");
  if (magic != 0x46554747u) {  // "GGUF" little-endian
    char got[5];
    std::memcpy(got, &magic, 4);
    got[4] = 0;
    fail("{}: header.magic: expected 'GGUF' (not a GGUF file?), got '{}' (0x{:08x})", path_,
         printable(got), magic);
  }
  version_ = c.read<uint32_t>("header.version");
  if (version_ != 2 && version_ != 3) {
    const bool swapped = version_ > 0xffff && (version_ & 0xffff) == 0;
    fail("{}: header.version: expected 2 or 3, got {}{}", path_, version_,
         version_ == 1 ? " (GGUF v1 is not supported)"
                       : swapped ? " (a big-endian file? not supported)" : "");
  }
  n_tensors = c.read<uint64_t>("header.tensor_count");
  n_kv = c.read<uint64_t>("header.kv_count");
  if (n_kv > c.left() / kMinKvBytes) {
    fail("{}: header.kv_count: expected at most {} key/values in the {} bytes left, got {}",
         path_, c.left() / kMinKvBytes, c.left(), n_kv);
  }
  if (n_tensors > c.left() / kMinTensorInfoBytes) {
    fail("{}: header.tensor_count: expected at most {} tensors in the {} bytes left, got {}",
         path_, c.left() / kMinTensorInfoBytes, c.left(), n_tensors);
  }
}

void GgufImpl::parse_metadata(Cursor& c, uint64_t n_kv) {
  metadata_.reserve(size_t(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string where = "metadata[" + std::to_string(i) + "]";
    std::string key = c.read_string(where + ".key");
    if (key.empty() || key.size() > kMaxKeyBytes) {
      fail("{}: {}.key length: expected 1..{} bytes, got {}", path_, where, kMaxKeyBytes,
           key.size());
    }
    const std::string field = "metadata '" + printable(key) + "'";
    if (key_index_.count(key) != 0) {
      fail("{}: {}: expected unique keys, got a duplicate", path_, field);
    }
    const uint32_t t = c.read<uint32_t>(field + " type");
    if (!valid_value_type(t)) {
      fail("{}: {} type: expected a GGUF value type 0..12, got {}", path_, field, t);
    }
    GgufValue v = read_value(c, static_cast<GgufValueType>(t), field, 0);
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }
}

void GgufImpl::parse_alignment() {
  const GgufValue* a = find("general.alignment");
  if (a == nullptr) return;
  if (a->type != GgufValueType::U32) {
    fail("{}: metadata 'general.alignment' type: expected U32, got {}", path_,
         gguf_value_type_name(a->type));
  }
  const uint64_t v = std::get<uint64_t>(a->v);
  if (v == 0 || (v & (v - 1)) != 0) {
    fail("{}: metadata 'general.alignment': expected a power of two, got {}", path_, v);
  }
  alignment_ = v;
}

void GgufImpl::parse_tensor_info(Cursor& c, uint64_t index) {
  const std::string where = "tensor[" + std::to_string(index) + "]";
  GgufTensorInfo t{};
  t.name = c.read_string(where + ".name");
  if (t.name.empty()) fail("{}: {}.name: expected a non-empty name, got \"\"", path_, where);
  const std::string field = "tensor '" + printable(t.name) + "'";
  if (tensor_index_.count(t.name) != 0) {
    fail("{}: {}: expected unique tensor names, got a duplicate", path_, field);
  }
  const uint32_t n_dims = c.read<uint32_t>(field + " n_dims");
  if (n_dims < 1 || n_dims > kMaxDims) {
    fail("{}: {} n_dims: expected 1..{}, got {}", path_, field, kMaxDims, n_dims);
  }
  int64_t n_values = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t dim = c.read<uint64_t>(field + " dims[" + std::to_string(d) + "]");
    if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(n_values, int64_t(dim), &n_values)) {
      fail("{}: {} dims[{}]: expected a shape whose product fits in int64, got {}", path_,
           field, d, dim);
    }
    t.shape.push_back(int64_t(dim));
  }
  t.n_values = n_values;
  const uint32_t type_id = c.read<uint32_t>(field + " type");
  const std::optional<GgmlTypeInfo> info = ggml_type_info(type_id);
  if (!info) {
    fail("{}: {} type: expected a known ggml type id, got {}", path_, field, type_id);
  }
  if (!info->supported && !options_.allow_unsupported_types) {
    fail("{}: {} type: expected one of the types aquakv can read ({}), got {} (id {})", path_,
         field, ggml_supported_type_names(), info->name, type_id);
  }
  t.type = static_cast<GgmlType>(type_id);
  if (t.shape[0] % info->block_values != 0) {
    fail("{}: {} dims[0]: expected a multiple of the {} block size {}, got {}", path_, field,
         info->name, info->block_values, t.shape[0]);
  }
  // Bytes = row bytes * rows, both products checked (a shape whose value count fits in int64
  // can still need more than 2^63 bytes).
  int64_t row_bytes = 0;
  const int64_t rows = t.shape[0] == 0 ? 0 : t.n_values / t.shape[0];
  if (__builtin_mul_overflow(t.shape[0] / info->block_values, info->block_bytes, &row_bytes) ||
      __builtin_mul_overflow(row_bytes, rows, &t.n_bytes)) {
    fail("{}: {}: expected a byte size that fits in int64, got shape [{}] of {}", path_, field,
         fmt::join(t.shape, ", "), info->name);
  }
  t.offset = c.read<uint64_t>(field + " offset");
  tensor_index_.emplace(t.name, tensors_.size());
  tensors_.push_back(std::move(t));
}

// Checks each tensor's offset (aligned, inside the file) and that no two tensors overlap, then
// points `data` into the image.
void GgufImpl::place_tensors() {
  const uint64_t size = storage_.size();
  if (tensors_.empty()) return;
  if (data_offset_ > size) {
    fail("{}: tensor data section: expected to start within the file ({} bytes), got offset {}",
         path_, size, data_offset_);
  }
  const uint64_t data_bytes = size - data_offset_;
  for (auto& t : tensors_) {
    const std::string field = "tensor '" + printable(t.name) + "' offset";
    if (t.offset % alignment_ != 0) {
      fail("{}: {}: expected a multiple of the alignment {}, got {}", path_, field, alignment_,
           t.offset);
    }
    if (t.offset > data_bytes || uint64_t(t.n_bytes) > data_bytes - t.offset) {
      fail("{}: {}: expected {} + {} data bytes to end within the {}-byte data section, got "
           "offset {} (file truncated or corrupt)",
           path_, field, t.offset, t.n_bytes, data_bytes, t.offset);
    }
    t.data = storage_.data() + data_offset_ + t.offset;
  }
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = tensors_[order[i - 1]];
    const auto& cur = tensors_[order[i]];
    if (prev.n_bytes > 0 && cur.n_bytes > 0 && prev.offset + uint64_t(prev.n_bytes) > cur.offset) {
      fail("{}: tensor '{}' offset: expected at least {} (end of tensor '{}'), got {} (tensors "
           "overlap)",
           path_, printable(cur.name), prev.offset + uint64_t(prev.n_bytes), printable(prev.name),
           cur.offset);
    }
  }
}

void GgufImpl::parse() {
  Cursor c(storage_.data(), storage_.size(), path_);
  uint64_t n_tensors = 0, n_kv = 0;
  parse_header(c, n_tensors, n_kv);
  parse_metadata(c, n_kv);
  parse_alignment();
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) parse_tensor_info(c, i);
  // The data section starts at the next multiple of the alignment (no overflow: pos <= size
  // < 2^63 and alignment <= 2^31).
  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  place_tensors();
}

}  // namespace

GgufValue gguf_decode_element(GgufValueType type, const uint8_t*& p) {
  auto take = [&p](auto v) {
    std::memcpy(&v, p, sizeof v);
    p += sizeof v;
    return v;
  };
  switch (type) {
    case GgufValueType::U8: return {type, uint64_t(take(uint8_t{}))};
    case GgufValueType::U16: return {type, uint64_t(take(uint16_t{}))};
    case GgufValueType::U32: return {type, uint64_t(take(uint32_t{}))};
    case GgufValueType::U64: return {type, take(uint64_t{})};
    case GgufValueType::I8: return {type, int64_t(take(int8_t{}))};
    case GgufValueType::I16: return {type, int64_t(take(int16_t{}))};
    case GgufValueType::I32: return {type, int64_t(take(int32_t{}))};
    case GgufValueType::I64: return {type, take(int64_t{})};
    case GgufValueType::F32: return {type, double(take(float{}))};
    case GgufValueType::F64: return {type, take(double{})};
    case GgufValueType::BOOL: return {type, take(uint8_t{}) == 1};
    case GgufValueType::STRING: {
      const uint64_t len = take(uint64_t{});
      std::string s(reinterpret_cast<const char*>(p), size_t(len));
      p += len;
      return {type, std::move(s)};
    }
    case GgufValueType::ARRAY: break;
  }
  AQUAKV_CHECK(false, "gguf_decode_element: long arrays hold scalars or strings");
  return {};
}

std::string_view gguf_value_type_name(GgufValueType type) {
  static constexpr std::string_view kNames[] = {"U8",  "I8",   "U16",    "I16",   "U32",
                                                "I32", "F32",  "BOOL",   "STRING", "ARRAY",
                                                "U64", "I64",  "F64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : std::string_view("?");
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, GgufOpenOptions options) {
  auto f = std::make_unique<GgufImpl>(path, options);
  f->storage().map_file(path);
  f->parse();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::from_memory(std::span<const uint8_t> bytes,
                                                const std::string& name,
                                                GgufOpenOptions options) {
  auto f = std::make_unique<GgufImpl>(name, options);
  f->storage().copy(bytes);
  f->parse();
  return f;
}

}  // namespace aquakv
