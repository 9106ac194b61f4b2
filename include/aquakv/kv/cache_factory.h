// Cache factory: builds a KvCache from the user's --kv spelling. Owns: the table of cache formats
// ("fp16", "f32", and whatever later formats register). Not: the formats themselves.
//
// A spec is "name" or "name:arguments" (arguments are the format's business, e.g. a file of
// calibrated predictors). Formats are added by calling register_cache_format at start-up, or by
// adding a line to the built-in table in src/kv/cache_factory.cpp (preferred: a static
// registrar object in a static library is dropped by the linker unless something references
// its file).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// Makes a cache of `shape`; `args` is the part of the spec after the first ':' ("" if none).
using CacheMaker = std::function<std::unique_ptr<KvCache>(const std::string& args, const KvShape& shape)>;

struct CacheFormat {
  std::string name;  // spec prefix, e.g. "fp16"
  std::string help;  // one line for --help
  CacheMaker make;
};

// Adds (or replaces) a format.
void register_cache_format(CacheFormat format);

// All known formats, built-in first.
std::vector<CacheFormat> cache_formats();

// Builds the cache named by `spec`. Throws Error naming the spec and listing the known formats
// when the name is unknown.
std::unique_ptr<KvCache> make_cache(const std::string& spec, const KvShape& shape);

}  // namespace aquakv
