// The calibration files' envelope (kv/file_envelope.h).
#include "aquakv/kv/file_envelope.h"

#include <cstring>

#include "aquakv/util/error.h"
#include "aquakv/util/hash.h"

namespace aquakv {

size_t begin_envelope(ByteWriter& w, const char (&magic)[8], uint32_t version) {
  w.append(magic, 8);
  w.put<uint32_t>(version);
  const size_t length_at = w.size();
  w.put<uint64_t>(0);
  return length_at;
}

uint64_t end_envelope(ByteWriter& w, size_t length_at) {
  w.patch<uint64_t>(length_at, uint64_t(w.size() + 8));
  const uint64_t sum = fnv1a64(w.bytes().data(), int64_t(w.size()));
  w.put<uint64_t>(sum);
  return sum;
}

uint64_t check_envelope(ByteReader& r, std::span<const uint8_t> bytes, const char (&magic)[8], uint32_t version,
                        const std::string& what, const std::string& kind) {
  const auto m = r.bytes(8, "magic");
  if (std::memcmp(m.data(), magic, 8) != 0) fail("{}: not a {} (bad magic)", what, kind);
  const uint32_t v = r.get<uint32_t>("version");
  if (v != version) fail("{}: version {} (this build reads {})", what, v, version);
  const uint64_t length = r.get<uint64_t>("file length");
  if (length != bytes.size()) fail("{}: header says {} bytes, the file has {}", what, length, bytes.size());
  const uint64_t want = fnv1a64(bytes.data(), int64_t(bytes.size() - 8));
  uint64_t got;
  std::memcpy(&got, bytes.data() + bytes.size() - 8, 8);
  if (got != want) fail("{}: checksum mismatch (file corrupted)", what);
  return got;
}

}  // namespace aquakv
