// Model fingerprint (engine/fingerprint.h).
#include "aquakv/engine/fingerprint.h"

#include <algorithm>
#include <cstring>

#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

// FNV-1a from the legacy start value: meta_hash is stored in every adapter file, so changing
// the start value would make every existing file "made for another model" (util/hash.h).
struct Fnv {
  uint64_t h = kFnv1a64LegacyBasis;
  void bytes(const void* p, size_t n) { h = fnv1a64(p, int64_t(n), h); }
  template <typename T>
  void pod(T v) { bytes(&v, sizeof v); }
  void str(const std::string& s) { pod<uint64_t>(s.size()); bytes(s.data(), s.size()); }
  void value(const GgufValue& v) {
    pod<uint32_t>(uint32_t(v.type));
    if (const auto* u = std::get_if<uint64_t>(&v.v)) pod(*u);
    else if (const auto* i = std::get_if<int64_t>(&v.v)) pod(*i);
    else if (const auto* d = std::get_if<double>(&v.v)) pod(*d);
    else if (const auto* b = std::get_if<bool>(&v.v)) pod<uint8_t>(*b);
    else if (const auto* s = std::get_if<std::string>(&v.v)) str(*s);
    else if (const auto* a = std::get_if<GgufValue::Array>(&v.v)) {
      pod<uint64_t>(a->size());
      a->for_each([this](const GgufValue& it) { value(it); });
    }
  }
};

}  // namespace

uint64_t model_meta_hash(const GgufFile& file, const std::string& arch) {
  Fnv f;
  const std::string prefix = arch + ".";
  for (const auto& [key, val] : file.metadata()) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    f.str(key);
    f.value(val);
  }
  constexpr int64_t kSample = 4096;
  for (const auto& t : file.tensors()) {
    f.str(t.name);
    for (int64_t d : t.shape) f.pod(d);
    f.pod<uint32_t>(uint32_t(t.type));
    const int64_t head = std::min(kSample, t.n_bytes);
    f.bytes(t.data, size_t(head));
    if (t.n_bytes > kSample) f.bytes(t.data + t.n_bytes - kSample, size_t(kSample));
  }
  return f.h;
}

ModelFingerprint model_fingerprint(const GgufFile& file, const KvShape& shape) {
  const std::string arch = file.get_string("general.architecture");
  return model_fingerprint(arch, model_meta_hash(file, arch), shape);
}

ModelFingerprint model_fingerprint(const std::string& arch, uint64_t meta_hash, const KvShape& shape) {
  ModelFingerprint fp;
  fp.arch = arch;
  fp.n_layers = shape.n_layers;
  fp.n_kv_heads = shape.n_kv_heads;
  fp.head_dim = shape.head_dim;
  fp.kv_width = shape.width();
  fp.meta_hash = meta_hash;
  return fp;
}

}  // namespace aquakv
