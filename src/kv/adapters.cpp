// Binary adapter file (format in docs/ADAPTERS.md): little-endian, length-prefixed strings,
// total length in the header, FNV-1a 64 checksum of everything before it at the end.
#include "aquakv/kv/adapters.h"

#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/fp16.h"
#include "aquakv/util/hash.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'A', 'D', 'P', 'T'};

// Version 1 files were checksummed from kFnv1a64LegacyBasis (one digit short of FNV-1a's
// offset basis); version 2 uses FNV-1a 64 as published. Both stay readable.
uint64_t checksum(uint32_t version, const uint8_t* p, size_t n) {
  return fnv1a64(p, int64_t(n), version == 1 ? kFnv1a64LegacyBasis : kFnv1a64Basis);
}

// Weights as f32 or IEEE f16 (the header's dtype).
void put_floats(ByteWriter& w, const std::vector<float>& v, AdapterDtype dt) {
  for (float f : v) {
    if (dt == AdapterDtype::kF16) w.put<uint16_t>(fp32_to_fp16(f)); else w.put<float>(f);
  }
}

std::vector<float> get_floats(ByteReader& r, int64_t n, AdapterDtype dt, const char* what) {
  const size_t esz = dt == AdapterDtype::kF16 ? 2 : 4;
  if (n < 0 || uint64_t(n) > r.remaining() / esz)
    fail("{}: {} needs {} values at offset {}, only {} bytes left", r.what(), what, n, r.pos(), r.remaining());
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& f : v) f = dt == AdapterDtype::kF16 ? fp16_to_fp32(r.get<uint16_t>(what)) : r.get<float>(what);
  return v;
}

void put_map(ByteWriter& w, const AffineMap& m, AdapterDtype dt) {
  w.put<int64_t>(m.in);
  w.put<int64_t>(m.out);
  w.put<int64_t>(m.rank);
  if (m.rank == 0) {
    put_floats(w, m.w, dt);
  } else {
    put_floats(w, m.u, dt);
    put_floats(w, m.v, dt);
  }
  put_floats(w, m.bias, dt);
}

// A map of in_a or in_b inputs (the narrow and wide predictor inputs; equal when only one is
// allowed) and want_out outputs.
AffineMap get_map(ByteReader& r, AdapterDtype dt, int64_t in_a, int64_t in_b, int64_t want_out, int64_t layer,
                  const char* which, const std::string& path) {
  AffineMap m;
  m.in = r.get<int64_t>(which);
  m.out = r.get<int64_t>(which);
  m.rank = r.get<int64_t>(which);
  if ((m.in != in_a && m.in != in_b) || m.out != want_out || m.rank < 0 || m.rank > m.out)
    fail("adapters {}: layer {} {} predictor is {}x{} rank {}, expected {}x{} rank <= {}", path,
         layer, which, m.in, m.out, m.rank, in_a == in_b ? fmt::format("{}", in_a) : fmt::format("({} or {})", in_a, in_b),
         want_out, want_out);
  if (m.rank == 0) {
    m.w = get_floats(r, m.in * m.out, dt, which);
  } else {
    m.u = get_floats(r, m.in * m.rank, dt, which);
    m.v = get_floats(r, m.rank * m.out, dt, which);
  }
  m.bias = get_floats(r, m.out, dt, which);
  return m;
}

}  // namespace

bool Adapters::has_plan() const {
  for (const auto& l : layers)
    if (!l.key_codec.empty() || !l.value_codec.empty()) return true;
  return false;
}

const std::string& Adapters::key_codec_of(int64_t l) const {
  if (l == 0) return quant.layer0_codec;
  const auto& c = layers.at(size_t(l)).key_codec;
  return c.empty() ? quant.key_codec : c;
}

const std::string& Adapters::value_codec_of(int64_t l) const {
  if (l == 0) return quant.layer0_codec;
  const auto& c = layers.at(size_t(l)).value_codec;
  return c.empty() ? quant.value_codec : c;
}

bool Adapters::has_wide_inputs() const {
  const int64_t C = model.kv_width;
  for (const auto& l : layers)
    if ((!l.key.empty() && l.key.in != C) || (!l.value.empty() && l.value.in != 2 * C)) return true;
  return false;
}

bool Adapters::has_scales() const {
  for (const auto& l : layers)
    if (!l.key_scale.empty() || !l.value_scale.empty()) return true;
  return false;
}

int64_t Adapters::n_params() const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.key.n_params() + l.value.n_params();
  return n;
}

void save_adapters(const Adapters& a, const std::string& path) {
  const int64_t C = a.model.kv_width;
  if (int64_t(a.layers.size()) != a.model.n_layers)
    fail("adapters {}: {} layers of predictors for a {}-layer model", path, a.layers.size(), a.model.n_layers);
  if (!a.layers.empty() && (!a.layers[0].key_codec.empty() || !a.layers[0].value_codec.empty() ||
                            !a.layers[0].key_scale.empty() || !a.layers[0].value_scale.empty()))
    fail("adapters {}: layer 0 takes the layer-0 codec, not a planned or scaled one", path);
  for (const auto& l : a.layers)
    for (const auto* s : {&l.key_scale, &l.value_scale})
      if (!s->empty() && int64_t(s->size()) != C) fail("adapters {}: {} channel scales for width {}", path, s->size(), C);
  const uint32_t version = a.has_wide_inputs() ? 4 : a.has_plan() || a.has_scales() ? 3 : 2;
  ByteWriter w;
  w.append(kMagic, 8);
  w.put<uint32_t>(version);
  w.put<uint32_t>(uint32_t(a.dtype));
  w.put<uint64_t>(0);  // total file length, patched below
  w.str(a.model.arch);
  w.put<int64_t>(a.model.n_layers);
  w.put<int64_t>(a.model.n_kv_heads);
  w.put<int64_t>(a.model.head_dim);
  w.put<int64_t>(C);
  w.put<uint64_t>(a.model.meta_hash);
  w.str(a.quant.key_codec);
  w.str(a.quant.value_codec);
  w.str(a.quant.layer0_codec);
  w.put<int64_t>(a.quant.group_size);
  w.put<uint64_t>(a.quant.signs_seed);
  w.put<int64_t>(a.rank);
  w.str(a.notes);
  for (const auto& l : a.layers) {
    const bool planned = !l.key_codec.empty() || !l.value_codec.empty();
    const uint8_t flags = uint8_t((l.key.empty() ? 0 : 1) | (l.value.empty() ? 0 : 2) | (planned ? 4 : 0) |
                                  (l.key_scale.empty() ? 0 : 8) | (l.value_scale.empty() ? 0 : 16));
    w.put<uint8_t>(flags);
    if (planned) {
      w.str(l.key_codec.empty() ? a.quant.key_codec : l.key_codec);
      w.str(l.value_codec.empty() ? a.quant.value_codec : l.value_codec);
    }
    if (!l.key_scale.empty()) put_floats(w, l.key_scale, AdapterDtype::kF32);
    if (!l.value_scale.empty()) put_floats(w, l.value_scale, AdapterDtype::kF32);
    if (!l.key.empty()) put_map(w, l.key, a.dtype);
    if (!l.value.empty()) put_map(w, l.value, a.dtype);
  }
  w.patch<uint64_t>(16, w.size() + 8);
  w.put<uint64_t>(checksum(version, reinterpret_cast<const uint8_t*>(w.bytes().data()), w.size()));
  write_file_atomic(path, w.bytes(), "adapters");
}


Adapters load_adapters(const std::string& path) {
  const std::string bytes = read_file(path, "adapters", ReadKind::kData);
  return parse_adapters({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, path);
}

Adapters parse_adapters(std::span<const uint8_t> b, const std::string& path) {
  if (b.size() < 8 || std::memcmp(b.data(), kMagic, 8) != 0)
    fail("adapters {}: not an aquakv adapter file (bad magic)", path);
  ByteReader r(b, "adapters " + path);
  r.get<uint64_t>("magic");
  const uint32_t version = r.get<uint32_t>("version");
  if (version < 1 || version > kAdapterVersion)
    fail("adapters {}: format version {}, this build reads versions 1 to {}", path, version, kAdapterVersion);
  const uint32_t dt = r.get<uint32_t>("dtype");
  if (dt > 1) fail("adapters {}: dtype {} unknown (expected 0 = f32 or 1 = f16)", path, dt);
  const uint64_t total = r.get<uint64_t>("file length");
  if (b.size() < total)
    fail("adapters {}: truncated: header says {} bytes, file has {}", path, total, b.size());
  if (b.size() > total)
    fail("adapters {}: {} unexpected bytes after the declared end ({} bytes)", path, b.size() - total, total);
  uint64_t stored;
  std::memcpy(&stored, b.data() + b.size() - 8, 8);
  if (checksum(version, b.data(), b.size() - 8) != stored)
    fail("adapters {}: checksum mismatch: the file is corrupted", path);

  Adapters a;
  a.file_checksum = stored;
  a.dtype = AdapterDtype(dt);
  a.model.arch = r.str("architecture");
  a.model.n_layers = r.get<int64_t>("n_layers");
  a.model.n_kv_heads = r.get<int64_t>("n_kv_heads");
  a.model.head_dim = r.get<int64_t>("head_dim");
  a.model.kv_width = r.get<int64_t>("kv_width");
  a.model.meta_hash = r.get<uint64_t>("meta_hash");
  a.quant.key_codec = r.str("key codec");
  a.quant.value_codec = r.str("value codec");
  a.quant.layer0_codec = r.str("layer-0 codec");
  a.quant.group_size = r.get<int64_t>("group size");
  a.quant.signs_seed = r.get<uint64_t>("signs seed");
  a.rank = r.get<int64_t>("rank");
  a.notes = r.str("notes");
  const int64_t L = a.model.n_layers, C = a.model.kv_width;
  if (L < 1 || L > 100000 || C < 1 || C > (1 << 20) || a.model.n_kv_heads * a.model.head_dim != C)
    fail("adapters {}: implausible shape: {} layers, {} KV heads x {} = width {}", path, L,
         a.model.n_kv_heads, a.model.head_dim, C);
  a.layers.resize(size_t(L));
  for (int64_t l = 0; l < L; ++l) {
    const uint8_t flags = r.get<uint8_t>("layer flags");
    if (flags > (version >= 3 ? 31 : 3) || (l == 0 && flags != 0))
      fail("adapters {}: layer {} flags {} invalid", path, l, flags);
    if (flags & 4) {
      a.layers[size_t(l)].key_codec = r.str("layer key codec");
      a.layers[size_t(l)].value_codec = r.str("layer value codec");
      if (a.layers[size_t(l)].key_codec.empty() || a.layers[size_t(l)].value_codec.empty())
        fail("adapters {}: layer {} names an empty codec", path, l);
    }
    if (flags & 8) a.layers[size_t(l)].key_scale = get_floats(r, C, AdapterDtype::kF32, "key channel scales");
    if (flags & 16) a.layers[size_t(l)].value_scale = get_floats(r, C, AdapterDtype::kF32, "value channel scales");
    // Input widths: keys C ([K̂_{l-1}]) or, from version 4, 2C ([K̂_{l-1} ; V̂_{l-1}]); values 2C
    // ([K̂_l ; V̂_{l-1}]) or, from version 4, 3C (+ K̂_{l-1}).
    const bool wide_ok = version >= 4;
    if (flags & 1) a.layers[size_t(l)].key = get_map(r, a.dtype, C, wide_ok ? 2 * C : C, C, l, "key", path);
    if (flags & 2) a.layers[size_t(l)].value = get_map(r, a.dtype, 2 * C, wide_ok ? 3 * C : 2 * C, C, l, "value", path);
  }
  if (r.pos() != b.size() - 8)
    fail("adapters {}: {} bytes between the last layer and the checksum", path, b.size() - 8 - r.pos());
  return a;
}

void check_adapters_match(const Adapters& a, const ModelFingerprint& m,
                          const AdapterQuantConfig& q, const std::string& path) {
  const auto& f = a.model;
  if (f.arch != m.arch) fail("adapters {}: made for architecture '{}', the model is '{}'", path, f.arch, m.arch);
  if (f.n_layers != m.n_layers) fail("adapters {}: made for {} layers, the model has {}", path, f.n_layers, m.n_layers);
  if (f.n_kv_heads != m.n_kv_heads) fail("adapters {}: made for {} KV heads, the model has {}", path, f.n_kv_heads, m.n_kv_heads);
  if (f.head_dim != m.head_dim) fail("adapters {}: made for head dim {}, the model has {}", path, f.head_dim, m.head_dim);
  if (f.kv_width != m.kv_width) fail("adapters {}: made for KV width {}, the model has {}", path, f.kv_width, m.kv_width);
  if (f.meta_hash != m.meta_hash)
    fail("adapters {}: made for another model (model hash {:016x} in the file, this model's is {:016x}: another "
         "fine-tune, weight quantization or hyper-parameters; calibrate for this model)", path, f.meta_hash, m.meta_hash);
  const auto& g = a.quant;
  if (g.key_codec != q.key_codec) fail("adapters {}: fitted for key codec '{}', the cache uses '{}'", path, g.key_codec, q.key_codec);
  if (g.value_codec != q.value_codec) fail("adapters {}: fitted for value codec '{}', the cache uses '{}'", path, g.value_codec, q.value_codec);
  if (g.layer0_codec != q.layer0_codec) fail("adapters {}: fitted with layer-0 policy '{}', the cache uses '{}'", path, g.layer0_codec, q.layer0_codec);
  if (g.group_size != q.group_size) fail("adapters {}: fitted with group size {}, the cache uses {}", path, g.group_size, q.group_size);
  if (g.signs_seed != q.signs_seed) fail("adapters {}: fitted with Hadamard signs seed {}, the cache uses {}", path, g.signs_seed, q.signs_seed);
}

}  // namespace aquakv
