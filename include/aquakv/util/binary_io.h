// The one binary reader/writer of aquakv's file formats (adapters, logits files, session files).
// Owns: little-endian fixed-width fields, length-prefixed strings and raw byte runs, appended to
// a growing buffer or read through a bounds-checked cursor whose every failure names the file,
// the field and the offset. Not: any format's layout (each format's module) or file access
// (util/file_io.h).
//
// Fields are copied with memcpy in host order; aquakv builds for x86-64 only (little-endian),
// which is the byte order every format documents.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace aquakv {

class ByteWriter {
 public:
  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&v, sizeof(T));
  }
  // u32 length, then the bytes.
  void str(std::string_view s) {
    put<uint32_t>(uint32_t(s.size()));
    append(s.data(), s.size());
  }
  void append(const void* p, size_t n) {
    if (n > 0) buf_.append(static_cast<const char*>(p), n);
  }
  // Zero bytes up to the next multiple of `a` (a power of two) of the buffer's size.
  void pad_to(size_t a) { buf_.resize((buf_.size() + a - 1) & ~(a - 1), '\0'); }
  // Overwrites a field written earlier at byte offset `at` (e.g. a length known at the end).
  template <typename T>
  void patch(size_t at, T v) {
    std::memcpy(buf_.data() + at, &v, sizeof(T));
  }
  size_t size() const { return buf_.size(); }
  std::string& bytes() { return buf_; }
  const std::string& bytes() const { return buf_; }

 private:
  std::string buf_;
};

class ByteReader {
 public:
  // `what` prefixes every error, e.g. "adapters FILE" -> "adapters FILE: truncated at ...".
  ByteReader(std::span<const uint8_t> bytes, std::string what) : b_(bytes), what_(std::move(what)) {}

  template <typename T>
  T get(const char* field) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // A u32-length-prefixed string of at most max_len bytes.
  std::string str(const char* field, uint32_t max_len = 1u << 20);
  // The next n bytes, in place (no copy).
  std::span<const uint8_t> bytes(uint64_t n, const char* field) {
    need(n, field);
    const auto s = b_.subspan(pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }
  void need(uint64_t n, const char* field) const;
  void seek(size_t pos, const char* field);
  size_t pos() const { return pos_; }
  size_t remaining() const { return b_.size() - pos_; }
  const std::string& what() const { return what_; }

 private:
  std::span<const uint8_t> b_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace aquakv
