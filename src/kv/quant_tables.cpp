// Quantizer tables file and caches (kv/quant_tables.h). Layout (docs/ADAPTERS.md): magic
// "AQKVQTAB", u32 version, u64 file length, str method, model fingerprint, i32 bits, i64
// outliers per row, i64 group, str notes, per layer f32 key centroids, key offsets, key scales,
// value centroids (sizes from the method, kv/quant_tables.h); u64 FNV-1a 64 of every byte
// before it.
#include "aquakv/kv/quant_tables.h"

#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <filesystem>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/file_envelope.h"
#include "aquakv/kv/layered_cache.h"
#include "aquakv/quant/cq_codec.h"
#include "aquakv/quant/kvquant_codec.h"
#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'Q', 'T', 'A', 'B'};

void put_floats(ByteWriter& w, const std::vector<float>& v) { w.append(v.data(), v.size() * sizeof(float)); }

std::vector<float> get_floats(ByteReader& r, int64_t n, const char* field) {
  // Bounded before multiplying (a huge n would wrap n * 4) and before allocating.
  if (n < 0 || uint64_t(n) > r.remaining() / sizeof(float))
    fail("{}: {} needs {} values at offset {}, only {} bytes left", r.what(), field, n, r.pos(), r.remaining());
  const auto b = r.bytes(uint64_t(n) * sizeof(float), field);
  std::vector<float> v(static_cast<size_t>(n));
  if (n > 0) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

KvQuantParams params(const QuantTables& t, const QuantLayerTables& l, bool keys) {
  KvQuantParams p;
  p.bits = t.bits;
  p.per_channel = keys;
  p.centroids = keys ? l.key_centroids : l.value_centroids;
  if (keys) {
    p.offset = l.key_offset;
    p.scale = l.key_scale;
  }
  p.outliers_per_row = t.outliers_per_row;
  return p;
}

// Sizes of a layer's four arrays for the method.
struct Sizes {
  int64_t key_centroids, key_offset, key_scale, value_centroids;
};
Sizes sizes(const QuantTables& t) {
  const int64_t K = int64_t(1) << t.bits, C = t.model.kv_width;
  if (t.method == "kvquant") return {K, C, C, K};
  return {C * K, 0, 0, C * K};
}

std::shared_ptr<const Codec> codec(const QuantTables& t, size_t l, bool keys) {
  const std::string name = fmt::format("{}{}:{}:l{}", t.method, t.bits, keys ? "key" : "value", l);
  const QuantLayerTables& L = t.layers[l];
  if (t.method == "kvquant") return std::make_shared<KvQuantCodec>(name, t.model.kv_width, params(t, L, keys));
  return std::make_shared<CqCodec>(name, t.model.kv_width, t.group, t.bits, keys ? L.key_centroids : L.value_centroids);
}

// Every layer's codecs are built (and so validated) here: a bad table fails at load.
void check_tables(const QuantTables& t, const std::string& name) {
  if (t.method != "kvquant" && t.method != "cq") fail("quant tables {}: unknown method '{}' (expected kvquant or cq)", name, t.method);
  if (int64_t(t.layers.size()) != t.model.n_layers)
    fail("quant tables {}: {} layer tables for {} layers", name, t.layers.size(), t.model.n_layers);
  const Sizes z = sizes(t);
  for (size_t l = 0; l < t.layers.size(); ++l) {
    const QuantLayerTables& L = t.layers[l];
    if (int64_t(L.key_centroids.size()) != z.key_centroids || int64_t(L.key_offset.size()) != z.key_offset ||
        int64_t(L.key_scale.size()) != z.key_scale || int64_t(L.value_centroids.size()) != z.value_centroids)
      fail("quant tables {}: layer {} tables have the wrong sizes for {}", name, l, t.method);
    for (bool keys : {true, false}) {
      try {
        codec(t, l, keys);
      } catch (const Error& e) {
        fail("quant tables {}: {}", name, e.what());
      }
    }
  }
}

void check_model(const QuantTables& t, const KvShape& shape, const std::string& path) {
  check_fingerprint(t.model, shape, "quant tables " + path);
}

int64_t parse_count(const std::string& spec, const std::string& item) {
  const auto eq = item.find('=');
  int64_t x = -1;
  const std::string val = eq == std::string::npos ? "" : item.substr(eq + 1);
  const auto r = std::from_chars(val.data(), val.data() + val.size(), x);
  if (val.empty() || r.ec != std::errc() || r.ptr != val.data() + val.size() || x < 0)
    fail("--kv {}: {} needs a non-negative integer", spec, item.substr(0, eq));
  return x;
}

// "p=N,b=N" items into p and b (either may be absent).
void parse_options(const std::string& spec, const std::string& opts, int64_t& p, int64_t& b) {
  size_t pos = 0;
  while (pos < opts.size()) {
    const size_t next = opts.find(',', pos);
    const std::string item = opts.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    pos = next == std::string::npos ? opts.size() : next + 1;
    if (item.rfind("p=", 0) == 0) p = parse_count(spec, item);
    else if (item.rfind("b=", 0) == 0) b = parse_count(spec, item);
    else fail("--kv {}: unknown option '{}' (known: p, b)", spec, item);
  }
  if (b == 0) fail("--kv {}: b must be >= 1", spec);
}

}  // namespace

int64_t QuantTables::bytes_in_memory() const {
  int64_t n = 0;
  for (const auto& l : layers)
    n += int64_t(l.key_centroids.size() + l.value_centroids.size() + l.key_offset.size() + l.key_scale.size());
  return n * int64_t(sizeof(float));
}

void save_quant_tables(const QuantTables& t, const std::string& path) {
  check_tables(t, path);
  ByteWriter w;
  const size_t length_at = begin_envelope(w, kMagic, kQuantTablesVersion);
  w.str(t.method);
  write_fingerprint(w, t.model);
  w.put<int32_t>(t.bits);
  w.put<int64_t>(t.outliers_per_row);
  w.put<int64_t>(t.group);
  w.str(t.notes);
  for (const auto& l : t.layers) {
    put_floats(w, l.key_centroids);
    put_floats(w, l.key_offset);
    put_floats(w, l.key_scale);
    put_floats(w, l.value_centroids);
  }
  end_envelope(w, length_at);
  write_file_atomic(path, w.bytes(), "quant tables");
}

QuantTables parse_quant_tables(std::span<const uint8_t> bytes, const std::string& name) {
  ByteReader r(bytes, "quant tables " + name);
  const uint64_t sum = check_envelope(r, bytes, kMagic, kQuantTablesVersion, "quant tables " + name, "quantizer tables file");
  QuantTables t;
  t.checksum = sum;
  t.method = r.str("method", 64);
  if (t.method != "kvquant" && t.method != "cq") fail("quant tables {}: unknown method '{}'", name, t.method);
  t.model = read_fingerprint(r, "quant tables " + name);
  t.bits = r.get<int32_t>("bits");
  if (t.bits < 1 || t.bits > (t.method == "cq" ? 12 : 8))
    fail("quant tables {}: bits {} out of range for {}", name, t.bits, t.method);
  t.outliers_per_row = r.get<int64_t>("outliers per row");
  t.group = r.get<int64_t>("group");
  t.notes = r.str("notes");
  const Sizes z = sizes(t);
  for (int64_t l = 0; l < t.model.n_layers; ++l) {
    QuantLayerTables L;
    L.key_centroids = get_floats(r, z.key_centroids, "key centroids");
    L.key_offset = get_floats(r, z.key_offset, "key offsets");
    L.key_scale = get_floats(r, z.key_scale, "key scales");
    L.value_centroids = get_floats(r, z.value_centroids, "value centroids");
    t.layers.push_back(std::move(L));
  }
  if (r.remaining() != 8) fail("quant tables {}: {} unexpected bytes after the last layer", name, r.remaining() - 8);
  check_tables(t, name);
  return t;
}

QuantTables load_quant_tables(const std::string& path) {
  const std::string bytes = read_file(path, "quant tables", ReadKind::kData);
  return parse_quant_tables(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), path);
}

std::unique_ptr<KvCache> make_quant_tables_cache(const std::string& method, const std::string& defaults,
                                                 const std::string& args, const KvShape& shape) {
  const std::string spec = method + ":" + args;
  const size_t comma = args.find(',');
  const std::string path = args.substr(0, comma);
  if (path.empty())
    fail("--kv {}: needs the tables file: {}:FILE (make one with aquakv calibrate --method {})", method, method, method);
  int64_t p = -1, b = -1, dp = 0, db = 1;
  parse_options(spec, defaults, dp, db);
  parse_options(spec, comma == std::string::npos ? "" : args.substr(comma + 1), p, b);
  p = p >= 0 ? p : dp;
  b = b >= 0 ? b : db;
  const QuantTables t = load_quant_tables(path);
  if (t.method != method) fail("--kv {}: {} holds {} tables, not {}", spec, path, t.method, method);
  check_model(t, shape, path);
  const std::string name = fmt::format("{}:{},p={},b={}", method, path, p, b);
  std::vector<std::unique_ptr<KvCache>> layers;
  for (int l = 0; l < shape.n_layers; ++l) {
    CompressedCacheOptions o;
    o.name = name;
    o.sinks = p;
    o.buffer = b;
    o.key_codec = codec(t, size_t(l), true);
    o.value_codec = codec(t, size_t(l), false);
    layers.push_back(make_compressed_cache(single_layer_shape(shape, l), std::move(o)));
  }
  return make_layered_cache(shape, name, std::move(layers), t.bytes_in_memory(),
                            fmt::format("{} tables={:016x}", method, t.checksum));
}

}  // namespace aquakv
