// The registry of cache formats (kv/cache_factory.h): the one table below.
#include "aquakv/kv/cache_factory.h"

#include <mutex>

#include "aquakv/kv/clusterkv_cache.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/kv/eviction.h"
#include "aquakv/kv/layer_share.h"
#include "aquakv/kv/lorc_cache.h"
#include "aquakv/kv/minicache.h"
#include "aquakv/kv/quant_tables.h"
#include "aquakv/kv/think_cache.h"
#include "aquakv/quant/hadamard.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

CacheFormat plain(const char* name, KvDtype dtype, const char* help) {
  return {name, help, [dtype](const std::string& args, const KvShape& shape) {
            if (!args.empty()) fail("--kv: format takes no arguments, got ':{}'", args);
            return make_plain_cache(shape, dtype);
          }, ""};
}

// One codec per stream on the compressed stack (kv/aquakv_cache.h).
CacheFormat coded(const char* name, const char* codec, bool takes_codec_args, const char* defaults,
                  const char* help) {
  return {name, help, [=](const std::string& args, const KvShape& shape) {
            return make_coded_cache(name, codec, takes_codec_args, defaults, args, shape);
          }, defaults};
}

// Rotated blocks (quant/rotated_block_codec.h): the rotation spans one attention head, so the
// codec spec gets the model's head size when the cache is made.
CacheFormat rotated(const char* name, const char* defaults, const char* help) {
  return {name, help, [=](const std::string& args, const KvShape& shape) {
            const std::string codec = std::string(name) + ":h" + std::to_string(shape.head_dim);
            return make_coded_cache(name, codec, false, defaults, args, shape);
          }, defaults};
}

// Plain HIGGS cache formats: groups of one attention head (g = head size) when the head size has
// a Hadamard transform and is at least 32, so that attention on the codes (kv/attend.h) turns
// each query once per head and reads each row once per KV head: the inner basis of a group that
// spans every head costs every query head a full-width dot product per row (3x the arithmetic
// on the default model; its cache step measured 1.6-2.1x slower). Other widths keep the
// codec's default.
CacheFormat higgs_per_head(const char* name, const char* codec, const char* defaults, const char* help) {
  return {name, help, [=](const std::string& args, const KvShape& shape) {
            const int64_t hd = shape.head_dim;
            const bool per_head = hd >= 32 && hadamard_supported(hd) && shape.width() % hd == 0;
            const std::string spec = std::string(codec) + (per_head ? ":g" + std::to_string(hd) : "");
            return make_coded_cache(name, spec, false, defaults, args, shape);
          }, defaults};
}

CacheFormat aquakv(const char* defaults, const char* help) {
  return {"aquakv", help, [=](const std::string& args, const KvShape& shape) {
            return make_aquakv_cache(defaults, args, shape);
          }, defaults};
}

// p = exact sink tokens, b = exact recent buffer (kv/compressed_formats.h for all options).
std::vector<CacheFormat>& table() {
  static std::vector<CacheFormat> t = {
      plain("fp16", KvDtype::F16, "16-bit float keys and values (the reference cache)"),
      plain("f16", KvDtype::F16, "same as fp16"),
      plain("f32", KvDtype::F32, "32-bit float keys and values"),
      coded("q8_0", "q8_0", false, "p=0,b=1", "llama.cpp q8_0 blocks (8.5 bits)"),
      coded("q4_0", "q4_0", false, "p=0,b=1", "llama.cpp q4_0 blocks (4.5 bits)"),
      coded("q4_1", "q4_1", false, "p=0,b=1", "llama.cpp q4_1 blocks (5 bits)"),
      rotated("q8_0r", "p=0,b=1", "q8_0 blocks of Hadamard-rotated heads, as llama.cpp stores K and V (8.5 bits)"),
      rotated("q4_0r", "p=0,b=1", "q4_0 blocks of Hadamard-rotated heads, as llama.cpp stores K and V (4.5 bits)"),
      rotated("q4_1r", "p=0,b=1", "q4_1 blocks of Hadamard-rotated heads (5 bits)"),
      coded("kivi2", "kivi2", false, "p=0,b=128,rope=pre", "KIVI 2-bit: keys per channel, values per token, recent tokens exact"),
      coded("kivi3", "kivi3", false, "p=0,b=128,rope=pre", "KIVI-style 3-bit (the 3-bit uniform comparison point): keys per channel, values per token, recent tokens exact"),
      coded("kivi4", "kivi4", false, "p=0,b=128,rope=pre", "KIVI 4-bit: keys per channel, values per token, recent tokens exact"),
      coded("higgs", "higgs:2x16", true, "p=4,b=128", "HIGGS on every layer, no predictors: higgs[:DxN[:gG][:seedS]]"),
      higgs_per_head("higgs2", "higgs:2x16", "p=4,b=128", "HIGGS 2x16 in per-head groups (2 bits + 16/head_dim for scales), no predictors"),
      higgs_per_head("higgs3", "higgs:2x64", "p=4,b=128", "HIGGS 2x64 in per-head groups (3 bits + scales), no predictors"),
      higgs_per_head("higgs4", "higgs:2x256", "p=4,b=128", "HIGGS 2x256 in per-head groups (4 bits + scales), no predictors"),
      {"kvquant", "KVQuant: kvquant:TABLES (per-layer non-uniform datatypes, per-channel pre-RoPE keys, per-token values, 1% outliers exact; aquakv calibrate --method kvquant)",
       [](const std::string& args, const KvShape& shape) { return make_quant_tables_cache("kvquant", "p=1,b=1", args, shape); }, "p=1,b=1"},
      {"cq", "Coupled Quantization: cq:TABLES (groups of c channels coded jointly by per-layer learned codebooks; aquakv calibrate --method cq)",
       [](const std::string& args, const KvShape& shape) { return make_quant_tables_cache("cq", "p=0,b=1", args, shape); }, "p=0,b=1"},
      aquakv("p=4,b=128", "AQUA-KV: aquakv:ADAPTERS (cross-layer predictors from aquakv calibrate + HIGGS residuals)"),
      {"think", "ThinK: think:PRUNE[,p=N,b=N,k=CODEC,v=CODEC] (query-driven pruning of the PRUNE share of key channels per head; k/v codecs fp16 by default, e.g. k=higgs2,v=higgs2)",
       make_think_from_spec, "p=4,b=128"},
      {"clusterkv", "ClusterKV: clusterkv:BUDGET[,p=N,r=N,m=N,c=N] (every token resident in fp16; keys clustered per head, each query attends to the sinks, the recent rows and the closest clusters' tokens up to BUDGET)",
       make_clusterkv_from_spec, "p=4,r=128,m=128,c=16"},
      {"minicache", "MiniCache: minicache[:S][,t=T,keep=F,p=N,b=N] (layers S.. merged in adjacent pairs: one direction per token and head, per-layer magnitudes, the most distant rows kept whole)",
       make_minicache_from_spec, "S=layers/2,t=0.6,keep=0.05,p=4,b=128"},
      {"lorc", "LoRC: lorc:PLAN[,p=N] (keys and values stored as fp16 latents on per-layer low-rank bases from the model's K/V weights; aquakv calibrate --method lorc)",
       make_lorc_from_spec, "p=4"},
      // Policies around a format: "policy:ARGS+FORMAT".
      {"kvsharer", "KVSharer: kvsharer:PLAN[+FORMAT] (layer sharing from aquakv calibrate --method kvsharer: shared layers store nothing and attend over an earlier layer's rows; the other layers in FORMAT, default fp16)",
       make_kvsharer_from_spec, "FORMAT=fp16"},
      {"l2evict", "L2-norm token eviction around any format: l2evict:KEEP[,p=N,r=N,e=N]+FORMAT (keeps the KEEP share of tokens, dropping the largest key norms; sinks and recent tokens kept)",
       make_l2evict_from_spec, "p=4,r=128,e=32"},
  };
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

std::string cache_formats_help() {
  std::string out;
  for (const auto& f : cache_formats())
    out += f.name + (f.defaults.empty() ? "" : " (" + f.defaults + ")") + ": " + f.help + "\n";
  return out;
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
