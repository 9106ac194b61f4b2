// The registry of cache formats: builds a KvCache from the user's --kv spelling. Owns: the one
// table of formats (name, default options, one-line doc, constructor) in
// src/kv/cache_factory.cpp. Not: the formats themselves (each lives in its own file).
//
// A spec is "name", "name:arguments" (the format's business, e.g. an adapter file or codec
// parameters) or "name,options" (e.g. "higgs3,p=2,b=64"). Adding a format is one file with its
// constructor plus one line in the table (docs/AQUAKV.md shows it). register_cache_format adds
// one at run time (tests, plug-ins).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// Makes a cache of `shape`; `args` is the part of the spec after "name:" (or ",options" with
// its comma), "" if none.
using CacheMaker = std::function<std::unique_ptr<KvCache>(const std::string& args, const KvShape& shape)>;

struct CacheFormat {
  std::string name;      // spec prefix, e.g. "fp16"
  std::string help;      // one line for --help
  CacheMaker make;
  std::string defaults;  // options used where the spec gives none, e.g. "p=4,b=128"
};

// Adds (or replaces) a format.
void register_cache_format(CacheFormat format);

// All known formats, built-in first.
std::vector<CacheFormat> cache_formats();

// Builds the cache named by `spec`. Throws Error naming the spec and listing the known formats
// when the name is unknown.
std::unique_ptr<KvCache> make_cache(const std::string& spec, const KvShape& shape);

// "name (defaults): help" for every format, one per line (for --help texts and `aquakv info`).
std::string cache_formats_help();

}  // namespace aquakv
