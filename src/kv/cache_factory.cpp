// The format table behind kv/cache_factory.h.
#include "aquakv/kv/cache_factory.h"

#include <mutex>

#include "aquakv/kv/compressed_formats.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

CacheMaker plain(KvDtype dtype) {
  return [dtype](const std::string& args, const KvShape& shape) {
    if (!args.empty()) fail("--kv: format takes no arguments, got ':{}'", args);
    return make_plain_cache(shape, dtype);
  };
}

std::vector<CacheFormat>& table() {
  static std::vector<CacheFormat> t = {
      {"fp16", "16-bit float keys and values (the reference cache)", plain(KvDtype::F16)},
      {"f16", "same as fp16", plain(KvDtype::F16)},
      {"f32", "32-bit float keys and values", plain(KvDtype::F32)},
  };
  static const bool compressed_added = [] {
    // The compressed caches of kv/compressed_formats.h (AQUA-KV, HIGGS, q8_0, q4_0, KIVI).
    for (const auto& f : compressed_formats()) {
      t.push_back({f.name, f.help, [name = f.name](const std::string& args, const KvShape& shape) {
                     return make_compressed_format(name, args, shape);
                   }});
    }
    return true;
  }();
  (void)compressed_added;
  return t;
}

std::mutex& mu() {
  static std::mutex m;
  return m;
}

}  // namespace

void register_cache_format(CacheFormat format) {
  std::lock_guard<std::mutex> lock(mu());
  for (auto& f : table()) {
    if (f.name == format.name) {
      f = std::move(format);
      return;
    }
  }
  table().push_back(std::move(format));
}

std::vector<CacheFormat> cache_formats() {
  std::lock_guard<std::mutex> lock(mu());
  return table();
}

std::unique_ptr<KvCache> make_cache(const std::string& spec, const KvShape& shape) {
  // "name", "name:args" or "name,options": args keep a leading ',' so a format can tell
  // options ("higgs3,p=2") from arguments ("higgs:2x64:g64,p=2").
  const auto cut = spec.find_first_of(":,");
  const std::string name = spec.substr(0, cut);
  const std::string args = cut == std::string::npos ? "" : spec.substr(spec[cut] == ':' ? cut + 1 : cut);
  std::string known;
  for (const auto& f : cache_formats()) {
    if (f.name == name) return f.make(args, shape);
    known += (known.empty() ? "" : ", ") + f.name;
  }
  fail("--kv: unknown cache format '{}' (known: {})", spec, known);
}

}  // namespace aquakv
