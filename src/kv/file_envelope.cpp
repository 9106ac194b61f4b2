// The calibration files' envelope (kv/file_envelope.h).
#include "aquakv/kv/file_envelope.h"

#include <cstring>

#include <fmt/format.h>

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

namespace {
constexpr int64_t kMaxLayers = 4096, kMaxWidth = 65536;
}  // namespace

void write_fingerprint(ByteWriter& w, const ModelFingerprint& m) {
  w.str(m.arch);
  w.put<int64_t>(m.n_layers);
  w.put<int64_t>(m.n_kv_heads);
  w.put<int64_t>(m.head_dim);
  w.put<int64_t>(m.kv_width);
  w.put<uint64_t>(m.meta_hash);
}

ModelFingerprint read_fingerprint(ByteReader& r, const std::string& what) {
  ModelFingerprint m;
  m.arch = r.str("arch", 256);
  m.n_layers = r.get<int64_t>("n_layers");
  m.n_kv_heads = r.get<int64_t>("n_kv_heads");
  m.head_dim = r.get<int64_t>("head_dim");
  m.kv_width = r.get<int64_t>("kv_width");
  m.meta_hash = r.get<uint64_t>("meta_hash");
  if (m.n_layers < 1 || m.n_layers > kMaxLayers || m.n_kv_heads < 1 || m.n_kv_heads > kMaxWidth || m.head_dim < 1 || m.head_dim > kMaxWidth ||
      m.kv_width != m.n_kv_heads * m.head_dim || m.kv_width > kMaxWidth)
    fail("{}: bad model dimensions ({} layers, {} x {} = width {})", what, m.n_layers, m.n_kv_heads, m.head_dim,
         m.kv_width);
  return m;
}

void check_fingerprint(const ModelFingerprint& m, const KvShape& shape, const std::string& what) {
  auto differ = [&](const char* field, auto file, auto model) {
    fail("{}: made for a model with {} {}, this model has {}", what, field, file, model);
  };
  if (m.n_layers != shape.n_layers) differ("n_layers", m.n_layers, shape.n_layers);
  if (m.n_kv_heads != shape.n_kv_heads) differ("n_kv_heads", m.n_kv_heads, shape.n_kv_heads);
  if (m.head_dim != shape.head_dim) differ("head_dim", m.head_dim, shape.head_dim);
  if (!shape.arch.empty() && m.arch != shape.arch) differ("architecture", m.arch, shape.arch);
  if (shape.model_hash != 0 && m.meta_hash != shape.model_hash)
    differ("fingerprint", fmt::format("{:016x}", m.meta_hash), fmt::format("{:016x}", shape.model_hash));
}

}  // namespace aquakv
