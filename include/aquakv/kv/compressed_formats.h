// The --kv spellings of the compressed caches (kv/aquakv_cache.h). Owns: parsing those specs
// into codecs, cache options and adapters. Not: the registry of formats with their defaults
// (kv/cache_factory.h) or the codecs' own spec grammar (quant/codec.h).
//
//   aquakv:FILE[,opts]       AQUA-KV with the predictors in FILE (docs/ADAPTERS.md); codecs and
//                            layer-0 policy come from the file        (defaults p=4, b=128)
//   higgs[:D x N[:gG][:seedS]][,opts]
//                            HIGGS on every layer, no predictors (default 2x16) (p=4, b=128)
//   higgs2, higgs3, higgs4   higgs:2x16, higgs:2x64, higgs:2x256         (p=4, b=128)
//   q8_0, q4_0, q4_1         llama.cpp blocks, every token coded at the end of its step (p=0, b=1)
//   q8_0r, q4_0r, q4_1r      the same blocks of Hadamard-rotated heads (codec q4_0r:h<head_dim>)
//   kivi2, kivi3, kivi4      KIVI: keys per channel over 32-token blocks, values per token;
//                            recent tokens exact until 128 have gathered (p=0, b=128, rope=pre)
// opts: p=N (exact sink tokens), b=N (exact buffer size B), k=CODEC, v=CODEC (key / value codec
// specs of quant/codec.h; not for aquakv, whose codecs are fixed by its adapters), l0=CODEC
// (layer-0 codec, "fp16" for exact), rope=pre|post (keys coded before or after RoPE; default
// post, KIVI pre: per-channel groups over tokens lose to RoPE's turning pairs; aquakv: pre only).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

// A cache of one codec per stream (HIGGS, q8_0, q4_0, KIVI) on the compressed stack. `name` is
// the registry name, `codec_spec` its codec (quant/codec.h) unless the spec gives codec
// arguments after "name:" (only when takes_codec_args), `defaults` the options used where the
// spec has none ("p=4,b=128"), `args` what make_cache passes (see kv/cache_factory.h).
std::unique_ptr<KvCache> make_coded_cache(const std::string& name, const std::string& codec_spec,
                                          bool takes_codec_args, const std::string& defaults,
                                          const std::string& args, const KvShape& shape);

// AQUA-KV: args "FILE[,options]" (the adapter file of aquakv calibrate).
std::unique_ptr<KvCache> make_aquakv_cache(const std::string& defaults, const std::string& args,
                                           const KvShape& shape);

// Checks the options of an aquakv spec (",p=N,b=N" or ""; k=, v=, l0= are refused) without
// needing the adapter file: lets a front end refuse a typo before it calibrates the file.
void check_aquakv_options(const std::string& options);

// The quantizer configuration an AQUA-KV cache with these codec specs uses (what adapters must
// have been fitted with). Canonicalises the specs through quant's codec factory.
AdapterQuantConfig aquakv_quant_config(const std::string& key_codec, const std::string& value_codec,
                                       const std::string& layer0_codec, int64_t width);

}  // namespace aquakv
