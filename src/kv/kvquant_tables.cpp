// KVQuant tables file and cache (kv/kvquant_tables.h). Layout (docs/ADAPTERS.md): magic
// "AQKVKVQT", u32 version, u64 file length, model fingerprint, i32 bits, i64 outliers per row,
// str notes, per layer f32 key centroids (2^bits), key offsets (C), key scales (C), value
// centroids (2^bits); u64 FNV-1a 64 of every byte before it.
#include "aquakv/kv/kvquant_tables.h"

#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <filesystem>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/kv/layered_cache.h"
#include "aquakv/quant/kvquant_codec.h"
#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'K', 'V', 'Q', 'T'};
constexpr int64_t kMaxLayers = 4096, kMaxWidth = 65536;

void put_floats(ByteWriter& w, const std::vector<float>& v) { w.append(v.data(), v.size() * sizeof(float)); }

std::vector<float> get_floats(ByteReader& r, int64_t n, const char* field) {
  const auto b = r.bytes(uint64_t(n) * sizeof(float), field);
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

KvQuantParams params(const KvQuantTables& t, const KvQuantLayer& l, bool keys) {
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

// Every layer's codecs are built (and so validated) here: a bad table fails at load.
void check_tables(const KvQuantTables& t, const std::string& name) {
  for (size_t l = 0; l < t.layers.size(); ++l) {
    for (bool keys : {true, false}) {
      try {
        KvQuantCodec(fmt::format("kvquant{}:{}:l{}", t.bits, keys ? "key" : "value", l), t.model.kv_width,
                     params(t, t.layers[l], keys));
      } catch (const Error& e) {
        fail("kvquant {}: {}", name, e.what());
      }
    }
  }
}

void check_model(const KvQuantTables& t, const KvShape& shape, const std::string& path) {
  const ModelFingerprint& m = t.model;
  auto differ = [&](const char* what, auto file, auto model) {
    fail("kvquant {}: made for a model with {} {}, this model has {}", path, what, file, model);
  };
  if (m.n_layers != shape.n_layers) differ("n_layers", m.n_layers, shape.n_layers);
  if (m.n_kv_heads != shape.n_kv_heads) differ("n_kv_heads", m.n_kv_heads, shape.n_kv_heads);
  if (m.head_dim != shape.head_dim) differ("head_dim", m.head_dim, shape.head_dim);
  if (!shape.arch.empty() && m.arch != shape.arch) differ("architecture", m.arch, shape.arch);
  if (shape.model_hash != 0 && m.meta_hash != shape.model_hash)
    differ("fingerprint", fmt::format("{:016x}", m.meta_hash), fmt::format("{:016x}", shape.model_hash));
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

int64_t KvQuantTables::bytes_in_memory() const {
  int64_t n = 0;
  for (const auto& l : layers)
    n += int64_t(l.key_centroids.size() + l.value_centroids.size() + l.key_offset.size() + l.key_scale.size());
  return n * int64_t(sizeof(float));
}

void save_kvquant(const KvQuantTables& t, const std::string& path) {
  check_tables(t, path);
  ByteWriter w;
  w.append(kMagic, 8);
  w.put<uint32_t>(kKvQuantVersion);
  const size_t length_at = w.size();
  w.put<uint64_t>(0);
  w.str(t.model.arch);
  w.put<int64_t>(t.model.n_layers);
  w.put<int64_t>(t.model.n_kv_heads);
  w.put<int64_t>(t.model.head_dim);
  w.put<int64_t>(t.model.kv_width);
  w.put<uint64_t>(t.model.meta_hash);
  w.put<int32_t>(t.bits);
  w.put<int64_t>(t.outliers_per_row);
  w.str(t.notes);
  for (const auto& l : t.layers) {
    put_floats(w, l.key_centroids);
    put_floats(w, l.key_offset);
    put_floats(w, l.key_scale);
    put_floats(w, l.value_centroids);
  }
  w.patch<uint64_t>(length_at, uint64_t(w.size() + 8));
  w.put<uint64_t>(fnv1a64(w.bytes().data(), int64_t(w.size())));
  write_file_atomic(path, w.bytes(), "kvquant tables");
}

KvQuantTables parse_kvquant(std::span<const uint8_t> bytes, const std::string& name) {
  ByteReader r(bytes, "kvquant " + name);
  const auto magic = r.bytes(8, "magic");
  if (std::memcmp(magic.data(), kMagic, 8) != 0) fail("kvquant {}: not a KVQuant tables file (bad magic)", name);
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kKvQuantVersion) fail("kvquant {}: version {} (this build reads {})", name, version, kKvQuantVersion);
  const uint64_t length = r.get<uint64_t>("file length");
  if (length != bytes.size()) fail("kvquant {}: header says {} bytes, the file has {}", name, length, bytes.size());
  const uint64_t want = fnv1a64(bytes.data(), int64_t(bytes.size() - 8));
  uint64_t got;
  std::memcpy(&got, bytes.data() + bytes.size() - 8, 8);
  if (got != want) fail("kvquant {}: checksum mismatch (file corrupted)", name);
  KvQuantTables t;
  t.model.arch = r.str("arch", 256);
  t.model.n_layers = r.get<int64_t>("n_layers");
  t.model.n_kv_heads = r.get<int64_t>("n_kv_heads");
  t.model.head_dim = r.get<int64_t>("head_dim");
  t.model.kv_width = r.get<int64_t>("kv_width");
  t.model.meta_hash = r.get<uint64_t>("meta_hash");
  const auto& m = t.model;
  if (m.n_layers < 1 || m.n_layers > kMaxLayers || m.n_kv_heads < 1 || m.head_dim < 1 ||
      m.kv_width != m.n_kv_heads * m.head_dim || m.kv_width > kMaxWidth)
    fail("kvquant {}: bad model dimensions ({} layers, {} x {} = width {})", name, m.n_layers, m.n_kv_heads,
         m.head_dim, m.kv_width);
  t.bits = r.get<int32_t>("bits");
  if (t.bits < 1 || t.bits > 8) fail("kvquant {}: bits must be in [1, 8], got {}", name, t.bits);
  t.outliers_per_row = r.get<int64_t>("outliers per row");
  t.notes = r.str("notes");
  const int64_t K = int64_t(1) << t.bits, C = m.kv_width;
  for (int64_t l = 0; l < m.n_layers; ++l) {
    KvQuantLayer L;
    L.key_centroids = get_floats(r, K, "key centroids");
    L.key_offset = get_floats(r, C, "key offsets");
    L.key_scale = get_floats(r, C, "key scales");
    L.value_centroids = get_floats(r, K, "value centroids");
    t.layers.push_back(std::move(L));
  }
  if (r.remaining() != 8) fail("kvquant {}: {} unexpected bytes after the last layer", name, r.remaining() - 8);
  check_tables(t, name);
  return t;
}

KvQuantTables load_kvquant(const std::string& path) {
  const std::string bytes = read_file(path, "kvquant tables", ReadKind::kData);
  return parse_kvquant(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), path);
}

std::unique_ptr<KvCache> make_kvquant_cache(const std::string& defaults, const std::string& args,
                                            const KvShape& shape) {
  const std::string spec = "kvquant:" + args;
  const size_t comma = args.find(',');
  const std::string path = args.substr(0, comma);
  if (path.empty()) fail("--kv kvquant: needs the tables file: kvquant:FILE (make one with aquakv calibrate --method kvquant)");
  int64_t p = -1, b = -1, dp = 1, db = 1;
  parse_options(spec, defaults, dp, db);
  parse_options(spec, comma == std::string::npos ? "" : args.substr(comma + 1), p, b);
  p = p >= 0 ? p : dp;
  b = b >= 0 ? b : db;
  auto t = std::make_shared<const KvQuantTables>(load_kvquant(path));
  check_model(*t, shape, path);
  const std::string name = fmt::format("kvquant:{},p={},b={}", path, p, b);
  std::vector<std::unique_ptr<KvCache>> layers;
  for (int l = 0; l < shape.n_layers; ++l) {
    CompressedCacheOptions o;
    o.name = name;
    o.sinks = p;
    o.buffer = b;
    const KvQuantLayer& L = t->layers[size_t(l)];
    o.key_codec = std::make_shared<KvQuantCodec>(fmt::format("kvquant{}:key:l{}", t->bits, l), shape.width(), params(*t, L, true));
    o.value_codec = std::make_shared<KvQuantCodec>(fmt::format("kvquant{}:value:l{}", t->bits, l), shape.width(), params(*t, L, false));
    layers.push_back(make_compressed_cache(single_layer_shape(shape, l), std::move(o)));
  }
  return make_layered_cache(shape, name, std::move(layers), t->bytes_in_memory());
}

}  // namespace aquakv
