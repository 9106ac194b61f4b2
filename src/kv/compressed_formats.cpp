// Spec parsing for the compressed caches (see kv/compressed_formats.h).
#include "aquakv/kv/compressed_formats.h"

#include <algorithm>
#include <charconv>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

struct Parsed {
  std::string head;  // before the first ','
  int64_t p = -1, b = -1;
  std::string k, v, l0;
  std::string rope;  // "pre" / "post" / "" (not given)
};

int64_t parse_count(const std::string& spec, const std::string& key, const std::string& val) {
  int64_t x = 0;
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (r.ec != std::errc() || r.ptr != val.data() + val.size() || x < 0)
    fail("--kv {}: {}= needs a non-negative integer, got '{}'", spec, key, val);
  return x;
}

Parsed parse(const std::string& name, const std::string& args) {
  Parsed out;
  // The spec as the user wrote it: "name", "name:args..." or "name,options".
  const std::string spec = args.empty() ? name : args[0] == ',' ? name + args : name + ":" + args;
  size_t pos = args.find(',');
  out.head = args.substr(0, pos);
  while (pos != std::string::npos) {
    const size_t next = args.find(',', pos + 1);
    const std::string item = args.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    pos = next;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("--kv {}: option '{}' is not key=value", spec, item);
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "p") out.p = parse_count(spec, key, val);
    else if (key == "b") out.b = parse_count(spec, key, val);
    else if (key == "k") out.k = val;
    else if (key == "v") out.v = val;
    else if (key == "l0") out.l0 = val;
    else if (key == "rope") {
      if (val != "pre" && val != "post") fail("--kv {}: rope= must be pre or post, got '{}'", spec, val);
      out.rope = val;
    } else fail("--kv {}: unknown option '{}' (known: p, b, k, v, l0, rope)", spec, key);
  }
  if (out.b == 0) fail("--kv {}: b must be >= 1", spec);
  return out;
}

std::shared_ptr<const Codec> codec(const std::string& spec, int64_t C, KvStream stream) {
  return std::shared_ptr<const Codec>(make_codec(spec, C, stream));
}

// Options the spec leaves out come from the registry row's defaults ("p=4,b=128").
int64_t pick(int64_t given, int64_t deflt) { return given >= 0 ? given : std::max<int64_t>(deflt, 0); }

void refuse_codec_options(const std::string& args, const Parsed& ps) {
  if (!ps.k.empty() || !ps.v.empty() || !ps.l0.empty())
    fail("--kv aquakv{}{}: k=, v=, l0= are fixed by the adapters (they were fitted for them)",
         args.empty() || args[0] == ',' ? "" : ":", args);
  if (ps.rope == "post")
    fail("--kv aquakv{}{}: rope=post is not possible: the predictors map keys before RoPE",
         args.empty() || args[0] == ',' ? "" : ":", args);
}

std::unique_ptr<KvCache> build_aquakv(const std::string& args, const Parsed& ps, const Parsed& d,
                                      const KvShape& shape) {
  if (ps.head.empty())
    fail("--kv aquakv: needs the adapter file here: aquakv:FILE (make one with aquakv calibrate; "
         "aquakv generate takes plain 'aquakv' and calibrates once per model)");
  refuse_codec_options(args, ps);
  auto a = std::make_shared<Adapters>(load_adapters(ps.head));
  const int64_t C = shape.width();
  // The model the cache serves, as far as the shape tells: its dimensions always, its
  // architecture and fingerprint when the caller knows them (Model::kv_shape fills both; a
  // hand-made shape leaves them unknown and only the dimensions are checked).
  ModelFingerprint want = a->model;
  want.n_layers = shape.n_layers;
  want.n_kv_heads = shape.n_kv_heads;
  want.head_dim = shape.head_dim;
  want.kv_width = C;
  if (!shape.arch.empty()) want.arch = shape.arch;
  if (shape.model_hash != 0) want.meta_hash = shape.model_hash;
  // The quantizer configuration is re-derived from the file's codec specs, so a file whose
  // group size or seed fields disagree with its own specs is refused too.
  CompressedCacheOptions o;
  try {  // the codec specs come from the file: an error must name it
    check_adapters_match(*a, want, aquakv_quant_config(a->quant.key_codec, a->quant.value_codec, a->quant.layer0_codec, C), ps.head);
    o.key_codec = codec(a->quant.key_codec, C, KvStream::kKey);
    o.value_codec = codec(a->quant.value_codec, C, KvStream::kValue);
    o.layer0_key_codec = codec(a->quant.layer0_codec, C, KvStream::kKey);
    o.layer0_value_codec = codec(a->quant.layer0_codec, C, KvStream::kValue);
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.find(ps.head) != std::string::npos) throw;
    fail("adapters {}: {}", ps.head, m);
  }
  o.sinks = pick(ps.p, d.p);
  o.buffer = pick(ps.b, d.b);
  o.adapters = a;
  o.name = "aquakv:" + ps.head + ",p=" + std::to_string(o.sinks) + ",b=" + std::to_string(o.buffer);
  return make_compressed_cache(shape, std::move(o));
}

}  // namespace

std::unique_ptr<KvCache> make_coded_cache(const std::string& name, const std::string& codec_spec,
                                          bool takes_codec_args, const std::string& defaults,
                                          const std::string& args, const KvShape& shape) {
  const Parsed ps = parse(name, args), d = parse(name, defaults.empty() ? "" : "," + defaults);
  if (!takes_codec_args && !ps.head.empty())
    fail("--kv {}:{}: takes only options (p=, b=, k=, v=, l0=)", name, args);
  const std::string c = ps.head.empty() ? codec_spec : name + ":" + ps.head;
  const int64_t C = shape.width();
  CompressedCacheOptions o;
  o.sinks = pick(ps.p, d.p);
  o.buffer = pick(ps.b, d.b);
  o.key_codec = codec(ps.k.empty() ? c : ps.k, C, KvStream::kKey);
  o.value_codec = codec(ps.v.empty() ? c : ps.v, C, KvStream::kValue);
  if (!ps.l0.empty()) {
    o.layer0_key_codec = codec(ps.l0, C, KvStream::kKey);
    o.layer0_value_codec = codec(ps.l0, C, KvStream::kValue);
  }
  // Keys coded after RoPE unless the spec or the registry row says rope=pre.
  o.keys_after_rope = (ps.rope.empty() ? d.rope : ps.rope) != "pre";
  o.name = name;
  if (!ps.head.empty()) o.name += ":" + ps.head;
  o.name += ",p=" + std::to_string(o.sinks) + ",b=" + std::to_string(o.buffer);
  if (!ps.rope.empty()) o.name += ",rope=" + ps.rope;
  if (!ps.k.empty()) o.name += ",k=" + o.key_codec->spec();
  if (!ps.v.empty()) o.name += ",v=" + o.value_codec->spec();
  if (!ps.l0.empty()) o.name += ",l0=" + o.layer0_key_codec->spec();
  return make_compressed_cache(shape, std::move(o));
}

std::unique_ptr<KvCache> make_aquakv_cache(const std::string& defaults, const std::string& args,
                                           const KvShape& shape) {
  return build_aquakv(args, parse("aquakv", args), parse("aquakv", defaults.empty() ? "" : "," + defaults), shape);
}

void check_aquakv_options(const std::string& options) {
  refuse_codec_options(options, parse("aquakv", options));
}

AdapterQuantConfig aquakv_quant_config(const std::string& key_codec, const std::string& value_codec,
                                       const std::string& layer0_codec, int64_t width) {
  AdapterQuantConfig q;
  const auto k = make_codec(key_codec, width, KvStream::kKey);
  const auto v = make_codec(value_codec, width, KvStream::kValue);
  const auto l0 = make_codec(layer0_codec, width, KvStream::kKey);
  q.key_codec = k->spec();
  q.value_codec = v->spec();
  q.layer0_codec = l0->spec();
  // Group size and sign seed of the residual codecs (HIGGS); 0 for other codecs.
  if (const auto* h = dynamic_cast<const HiggsCodec*>(k.get())) {
    q.group_size = h->group();
    q.signs_seed = h->sign_seed();
  }
  return q;
}

}  // namespace aquakv
