// Typed metadata getters of GgufFile (see engine/gguf.h): conversions between the stored value
// types and what callers ask for, with errors that name the file, the key, the expected and the
// actual type.
#include <cstdint>

#include "aquakv/engine/gguf.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

bool is_unsigned(GgufValueType t) {
  return t == GgufValueType::U8 || t == GgufValueType::U16 || t == GgufValueType::U32 ||
         t == GgufValueType::U64;
}
bool is_signed(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
         t == GgufValueType::I64;
}
bool is_float(GgufValueType t) { return t == GgufValueType::F32 || t == GgufValueType::F64; }
bool is_integer(GgufValueType t) { return is_unsigned(t) || is_signed(t); }
bool is_numeric(GgufValueType t) { return is_integer(t) || is_float(t); }

std::string type_desc(const GgufValue& v) {
  if (v.type != GgufValueType::ARRAY) return std::string(gguf_value_type_name(v.type));
  const auto& a = std::get<GgufValue::Array>(v.v);
  return "ARRAY of " + std::string(gguf_value_type_name(a.elem_type));
}

[[noreturn]] void wrong_type(const GgufFile& f, std::string_view key, std::string_view expected,
                             const GgufValue* v) {
  fail("{}: metadata '{}': expected {}, got {}", f.path(), key, expected,
       v == nullptr ? std::string("no such key") : type_desc(*v));
}

double as_f64(const GgufValue& v) {
  if (is_unsigned(v.type)) return double(std::get<uint64_t>(v.v));
  if (is_signed(v.type)) return double(std::get<int64_t>(v.v));
  return std::get<double>(v.v);
}

const GgufValue::Array& array_of(const GgufFile& f, std::string_view key,
                                 std::string_view expected, bool (*elem_ok)(GgufValueType)) {
  const GgufValue* v = f.find(key);
  if (v == nullptr || v->type != GgufValueType::ARRAY) wrong_type(f, key, expected, v);
  const auto& a = std::get<GgufValue::Array>(v->v);
  if (!elem_ok(a.elem_type)) wrong_type(f, key, expected, v);
  return a;
}

}  // namespace

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr || v->type != GgufValueType::STRING) wrong_type(*this, key, "STRING", v);
  return std::get<std::string>(v->v);
}

std::optional<std::string> GgufFile::get_string_opt(std::string_view key) const {
  if (find(key) == nullptr) return std::nullopt;
  return get_string(key);
}

uint64_t GgufFile::get_u64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr || !is_integer(v->type)) wrong_type(*this, key, "an integer", v);
  if (is_unsigned(v->type)) return std::get<uint64_t>(v->v);
  const int64_t s = std::get<int64_t>(v->v);
  if (s < 0) fail("{}: metadata '{}': expected a value >= 0, got {}", path(), key, s);
  return uint64_t(s);
}

uint64_t GgufFile::get_u64_or(std::string_view key, uint64_t dflt) const {
  return find(key) == nullptr ? dflt : get_u64(key);
}

double GgufFile::get_f64_or(std::string_view key, double dflt) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return dflt;
  if (!is_numeric(v->type)) wrong_type(*this, key, "a number", v);
  return as_f64(*v);
}

bool GgufFile::get_bool_or(std::string_view key, bool dflt) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return dflt;
  if (v->type != GgufValueType::BOOL) wrong_type(*this, key, "BOOL", v);
  return std::get<bool>(v->v);
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const auto& a = array_of(*this, key, "ARRAY of STRING",
                           [](GgufValueType t) { return t == GgufValueType::STRING; });
  std::vector<std::string> out;
  out.reserve(a.size());
  a.for_each([&](const GgufValue& item) { out.push_back(std::get<std::string>(item.v)); });
  return out;
}

std::vector<double> GgufFile::get_f64_array(std::string_view key) const {
  const auto& a = array_of(*this, key, "ARRAY of numbers", is_numeric);
  std::vector<double> out;
  out.reserve(a.size());
  a.for_each([&](const GgufValue& item) { out.push_back(as_f64(item)); });
  return out;
}

std::vector<int64_t> GgufFile::get_i64_array(std::string_view key) const {
  const auto& a = array_of(*this, key, "ARRAY of integers", is_integer);
  std::vector<int64_t> out;
  out.reserve(a.size());
  a.for_each([&](const GgufValue& item) {
    if (is_signed(item.type)) {
      out.push_back(std::get<int64_t>(item.v));
    } else {
      const uint64_t u = std::get<uint64_t>(item.v);
      if (u > uint64_t(INT64_MAX)) {
        fail("{}: metadata '{}'[{}]: expected a value <= {}, got {}", path(), key, out.size(),
             INT64_MAX, u);
      }
      out.push_back(int64_t(u));
    }
  });
  return out;
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (t == nullptr) fail("{}: tensor '{}': expected it in the file, got no such tensor", path(), name);
  return *t;
}

}  // namespace aquakv
