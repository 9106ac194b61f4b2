// The bounds-checked cursor of util/binary_io.h.
#include "aquakv/util/binary_io.h"

#include "aquakv/util/error.h"

namespace aquakv {

void ByteReader::need(uint64_t n, const char* field) const {
  if (n > b_.size() - pos_)
    fail("{}: truncated at {} (offset {}, need {} bytes, {} left)", what_, field, pos_, n, b_.size() - pos_);
}

void ByteReader::seek(size_t pos, const char* field) {
  if (pos > b_.size()) fail("{}: {} points at offset {}, past the end ({} bytes)", what_, field, pos, b_.size());
  pos_ = pos;
}

std::string ByteReader::str(const char* field, uint32_t max_len) {
  const uint32_t n = get<uint32_t>(field);
  if (n > max_len) fail("{}: {} length {} exceeds {}", what_, field, n, max_len);
  const auto s = bytes(n, field);
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

}  // namespace aquakv
