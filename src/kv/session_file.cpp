// Session files (kv/session_file.h; format in docs/SESSIONS.md).
#include "aquakv/kv/session_file.h"

#include <zstd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "aquakv/util/binary_io.h"
#include "aquakv/util/check.h"
#include "aquakv/util/error.h"
#include "aquakv/util/hash.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'S', 'E', 'S', 'S'};
constexpr uint64_t kAlign = 64;
constexpr int64_t kMaxTokens = int64_t(1) << 31;
constexpr int64_t kMaxLogits = int64_t(1) << 26;  // vocabulary sizes are far below this
constexpr uint32_t kMaxSections = 1u << 20;
constexpr uint64_t kMaxRaw = uint64_t(1) << 40;   // one section's bytes in memory

uint64_t align_up(uint64_t x) { return (x + kAlign - 1) & ~(kAlign - 1); }

// The sections a cache hands over, in order, pointing at the cache's storage.
class Collector final : public KvStateOut {
 public:
  struct Piece {
    std::string name;
    const uint8_t* data;
    uint64_t bytes;
  };
  void put(const std::string& name, const void* data, int64_t bytes) override {
    if (bytes < 0) fail("session: section '{}' of negative size", name);
    pieces.push_back({name, static_cast<const uint8_t*>(data), uint64_t(bytes)});
  }
  std::vector<Piece> pieces;
};

uint64_t adapter_checksum_of(const std::string& state_format) {
  const size_t at = state_format.find(" adapters=");
  if (at == std::string::npos) return 0;
  uint64_t x = 0;
  const char* p = state_format.data() + at + 10;
  std::from_chars(p, state_format.data() + state_format.size(), x, 16);
  return x;
}

// s[i].hash = FNV-1a 64 of the stored bytes at data[i]: groups of sections over threads, each
// group hashed four sections at a time (util/hash.h).
void hash_sections(const std::vector<const uint8_t*>& data, std::vector<SessionSection>& s) {
  const int64_t n = int64_t(s.size());
  parallel_for((n + 3) / 4, [&](int64_t g0, int64_t g1) {
    const int64_t i0 = 4 * g0, i1 = std::min(n, 4 * g1);
    std::vector<const void*> p(size_t(i1 - i0));
    std::vector<int64_t> len(size_t(i1 - i0));
    std::vector<uint64_t> out(size_t(i1 - i0));
    for (int64_t i = i0; i < i1; ++i) {
      p[size_t(i - i0)] = data[size_t(i)];
      len[size_t(i - i0)] = int64_t(s[size_t(i)].stored_bytes);
    }
    fnv1a64_many(p.data(), len.data(), i1 - i0, out.data());
    for (int64_t i = i0; i < i1; ++i) s[size_t(i)].hash = out[size_t(i - i0)];
  });
}

}  // namespace

SessionSaveStats save_session(const std::string& path, const KvCache& cache, int seq,
                              std::span<const int32_t> tokens, std::span<const float> logits,
                              const SessionSaveOptions& opt) {
  check_output_path(path, "session");
  if (int64_t(tokens.size()) != cache.n_tokens(seq))
    fail("session {}: {} tokens given for a sequence of {}", path, tokens.size(), cache.n_tokens(seq));
  Collector col;
  cache.save_state(seq, col);
  const size_t n = col.pieces.size();
  if (n > kMaxSections) fail("session {}: {} sections (at most {})", path, n, kMaxSections);

  // Optional zstd per section; a section stays raw unless compression saves >= 3%.
  std::vector<std::string> packed(n);
  std::vector<SessionSection> sec(n);
  std::vector<const uint8_t*> stored_at(n);
  parallel_for(int64_t(n), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto& p = col.pieces[size_t(i)];
      SessionSection& s = sec[size_t(i)];
      s.name = p.name;
      s.raw_bytes = s.stored_bytes = p.bytes;
      const uint8_t* data = p.data;
      if (opt.zstd && p.bytes >= 256) {
        std::string& z = packed[size_t(i)];
        z.resize(ZSTD_compressBound(p.bytes));
        const size_t k = ZSTD_compress(z.data(), z.size(), p.data, p.bytes, opt.zstd_level);
        if (!ZSTD_isError(k) && double(k) <= 0.97 * double(p.bytes)) {
          z.resize(k);
          s.codec = SectionCodec::kZstd;
          s.stored_bytes = k;
          data = reinterpret_cast<const uint8_t*>(z.data());
        } else {
          std::string().swap(z);
        }
      }
      stored_at[size_t(i)] = data;
    }
  });
  hash_sections(stored_at, sec);

  const KvShape& shape = cache.shape();
  const std::string fmt = cache.state_format();
  ByteWriter w;
  w.append(kMagic, 8);
  w.put<uint32_t>(kSessionVersion);
  w.put<uint32_t>(0);  // flags
  w.put<uint64_t>(0);  // file length, patched below
  w.put<uint64_t>(0);  // data offset, patched below
  w.str(shape.arch);
  w.put<int64_t>(shape.n_layers);
  w.put<int64_t>(shape.n_kv_heads);
  w.put<int64_t>(shape.head_dim);
  w.put<uint64_t>(shape.model_hash);
  w.put<int64_t>(shape.max_tokens);
  w.str(cache.name());
  w.str(fmt);
  w.put<uint64_t>(adapter_checksum_of(fmt));
  w.put<int64_t>(int64_t(tokens.size()));
  w.append(tokens.data(), tokens.size() * 4);
  w.put<int64_t>(int64_t(logits.size()));
  w.append(logits.data(), logits.size() * 4);
  w.put<uint32_t>(uint32_t(n));
  // The table's offsets: sections follow the header back to back, each 64-byte aligned. The
  // header's size does not depend on the offsets' values, so compute it first.
  size_t table_bytes = 0;
  for (const auto& s : sec) table_bytes += 4 + s.name.size() + 4 + 8 * 4;
  uint64_t off = align_up(w.size() + table_bytes + 8);
  const uint64_t data_offset = off;
  for (auto& s : sec) {
    s.offset = off;
    off = align_up(off + s.stored_bytes);
  }
  const uint64_t file_length = n == 0 ? data_offset : sec.back().offset + sec.back().stored_bytes;
  for (const auto& s : sec) {
    w.str(s.name);
    w.put<uint32_t>(uint32_t(s.codec));
    w.put<uint64_t>(s.offset);
    w.put<uint64_t>(s.raw_bytes);
    w.put<uint64_t>(s.stored_bytes);
    w.put<uint64_t>(s.hash);
  }
  w.patch<uint64_t>(16, file_length);
  w.patch<uint64_t>(24, data_offset);
  w.put<uint64_t>(fnv1a64(w.bytes().data(), int64_t(w.size())));
  AQUAKV_CHECK(w.size() <= data_offset);
  w.pad_to(kAlign);
  AQUAKV_CHECK(w.size() == data_offset);

  static const std::string zeros(kAlign, '\0');
  std::vector<std::string_view> out;
  out.push_back(w.bytes());
  SessionSaveStats st;
  for (size_t i = 0; i < n; ++i) {
    const SessionSection& s = sec[i];
    const char* data = s.codec == SectionCodec::kZstd ? packed[i].data()
                                                      : reinterpret_cast<const char*>(col.pieces[i].data);
    out.emplace_back(data, s.stored_bytes);
    const uint64_t end = s.offset + s.stored_bytes;
    if (i + 1 < n && sec[i + 1].offset > end) out.emplace_back(zeros.data(), sec[i + 1].offset - end);
    st.raw_section_bytes += s.raw_bytes;
    st.stored_section_bytes += s.stored_bytes;
  }
  write_file_atomic(path, out, "session");
  st.file_bytes = file_length;
  st.header_bytes = file_length - st.stored_section_bytes;
  return st;
}

std::unique_ptr<SessionFile> SessionFile::open(const std::string& path) {
  std::unique_ptr<SessionFile> f(new SessionFile());
  f->name_ = path;
  f->map_.open(path, "session");
  f->bytes_ = {f->map_.data(), size_t(f->map_.size())};
  f->parse_bytes();
  return f;
}

std::unique_ptr<SessionFile> SessionFile::parse(std::span<const uint8_t> bytes, const std::string& name) {
  std::unique_ptr<SessionFile> f(new SessionFile());
  f->name_ = name;
  f->bytes_ = bytes;
  f->parse_bytes();
  return f;
}

void SessionFile::parse_bytes() {
  const std::string& p = name_;
  const auto b = bytes_;
  if (b.size() < 8 || std::memcmp(b.data(), kMagic, 8) != 0)
    fail("session {}: not an aquakv session file (bad magic)", p);
  ByteReader r(b, "session " + p);
  r.get<uint64_t>("magic");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kSessionVersion)
    fail("session {}: format version {}, this build reads version {}", p, version, kSessionVersion);
  const uint32_t flags = r.get<uint32_t>("flags");
  if (flags != 0) fail("session {}: unknown flags {:#x}", p, flags);
  const uint64_t total = r.get<uint64_t>("file length");
  if (b.size() < total) fail("session {}: truncated: header says {} bytes, file has {}", p, total, b.size());
  if (b.size() > total) fail("session {}: {} unexpected bytes after the declared end ({} bytes)", p, b.size() - total, total);
  const uint64_t data_offset = r.get<uint64_t>("data offset");
  SessionInfo& in = info_;
  in.arch = r.str("architecture", 256);
  in.n_layers = r.get<int64_t>("n_layers");
  in.n_kv_heads = r.get<int64_t>("n_kv_heads");
  in.head_dim = r.get<int64_t>("head_dim");
  in.model_hash = r.get<uint64_t>("model hash");
  in.n_ctx = r.get<int64_t>("n_ctx");
  in.kv_spec = r.str("kv spec", 1 << 16);
  in.state_format = r.str("state format", 1 << 16);
  in.adapter_checksum = r.get<uint64_t>("adapter checksum");
  const int64_t nt = r.get<int64_t>("n_tokens");
  if (nt < 0 || nt > kMaxTokens) fail("session {}: implausible token count {}", p, nt);
  const auto tb = r.bytes(uint64_t(nt) * 4, "tokens");
  in.tokens.resize(size_t(nt));
  if (nt > 0) std::memcpy(in.tokens.data(), tb.data(), tb.size());
  const int64_t nl = r.get<int64_t>("n_logits");
  if (nl < 0 || nl > kMaxLogits) fail("session {}: implausible logits count {}", p, nl);
  const auto lb = r.bytes(uint64_t(nl) * 4, "logits");
  in.logits.resize(size_t(nl));
  if (nl > 0) std::memcpy(in.logits.data(), lb.data(), lb.size());
  const uint32_t ns = r.get<uint32_t>("n_sections");
  if (ns > kMaxSections) fail("session {}: {} sections (at most {})", p, ns, kMaxSections);
  r.need(uint64_t(ns) * 40, "section table");  // before allocating: >= 40 bytes per entry
  sections_.resize(ns);
  for (auto& s : sections_) {
    s.name = r.str("section name", 256);
    const uint32_t c = r.get<uint32_t>("section codec");
    if (c > 1) fail("session {}: section '{}' has unknown codec {}", p, s.name, c);
    s.codec = SectionCodec(c);
    s.offset = r.get<uint64_t>("section offset");
    s.raw_bytes = r.get<uint64_t>("section size");
    s.stored_bytes = r.get<uint64_t>("section stored size");
    s.hash = r.get<uint64_t>("section checksum");
  }
  const size_t header_end = r.pos();
  const uint64_t stored = r.get<uint64_t>("header checksum");
  if (fnv1a64(b.data(), int64_t(header_end)) != stored)
    fail("session {}: header checksum mismatch: the file is corrupted", p);

  // Structure: sections back to back from the data offset, 64-byte aligned, zeros between.
  if (in.n_layers < 1 || in.n_layers > 100000 || in.n_kv_heads < 1 || in.head_dim < 1 ||
      in.n_kv_heads > (1 << 20) || in.head_dim > (1 << 20) || in.n_kv_heads * in.head_dim > (1 << 20))
    fail("session {}: implausible model shape ({} layers, {} KV heads x {})", p, in.n_layers, in.n_kv_heads, in.head_dim);
  if (data_offset != align_up(r.pos()))
    fail("session {}: data offset {} should be {}", p, data_offset, align_up(r.pos()));
  uint64_t at = data_offset, prev_end = r.pos();
  for (size_t i = 0; i < sections_.size(); ++i) {
    const SessionSection& s = sections_[i];
    if (!index_.emplace(s.name, i).second) fail("session {}: section '{}' appears twice", p, s.name);
    if (s.offset != at) fail("session {}: section '{}' at offset {}, expected {}", p, s.name, s.offset, at);
    if (s.stored_bytes > total - s.offset)
      fail("session {}: section '{}' ({} bytes at {}) runs past the end ({} bytes)", p, s.name, s.stored_bytes, s.offset, total);
    if (s.raw_bytes > kMaxRaw || (s.codec == SectionCodec::kRaw && s.raw_bytes != s.stored_bytes))
      fail("session {}: section '{}' sizes {} / {} are inconsistent", p, s.name, s.raw_bytes, s.stored_bytes);
    for (uint64_t z = prev_end; z < s.offset; ++z) {
      if (b[size_t(z)] != 0) fail("session {}: non-zero padding at offset {}", p, z);
    }
    prev_end = s.offset + s.stored_bytes;
    at = align_up(prev_end);
  }
  const uint64_t end = sections_.empty() ? data_offset : prev_end;
  if (end != total) fail("session {}: sections end at {}, the file at {}", p, end, total);
  if (sections_.empty()) {
    for (uint64_t z = r.pos(); z < data_offset; ++z) {
      if (b[size_t(z)] != 0) fail("session {}: non-zero padding at offset {}", p, z);
    }
  }
  // Every section's checksum.
  std::vector<SessionSection> check = sections_;
  std::vector<const uint8_t*> at_data(check.size());
  for (size_t i = 0; i < check.size(); ++i) at_data[i] = b.data() + check[i].offset;
  hash_sections(at_data, check);
  for (size_t i = 0; i < check.size(); ++i) {
    if (check[i].hash != sections_[i].hash)
      fail("session {}: section '{}' checksum mismatch: the file is corrupted", p, sections_[i].name);
  }
}

void SessionFile::check_model(const KvShape& shape) const {
  const SessionInfo& in = info_;
  const std::string& p = name_;
  if (!shape.arch.empty() && in.arch != shape.arch)
    fail("session {}: made for architecture '{}', the model is '{}'", p, in.arch, shape.arch);
  if (in.n_layers != shape.n_layers || in.n_kv_heads != shape.n_kv_heads || in.head_dim != shape.head_dim)
    fail("session {}: made for {} layers x {} KV heads x {}, the model has {} x {} x {}", p, in.n_layers,
         in.n_kv_heads, in.head_dim, shape.n_layers, shape.n_kv_heads, shape.head_dim);
  if (shape.model_hash != 0 && in.model_hash != shape.model_hash)
    fail("session {}: made for another model (model hash {:016x} in the file, this model's is {:016x})", p,
         in.model_hash, shape.model_hash);
  if (int64_t(in.tokens.size()) > shape.max_tokens)
    fail("session {}: holds {} tokens, the context (-c) is {}", p, in.tokens.size(), shape.max_tokens);
}

void SessionFile::load_into(KvCache& cache, int seq) const {
  check_model(cache.shape());
  const std::string want = cache.state_format();
  if (info_.state_format != want) {
    const auto a = info_.state_format.find(" adapters="), b = want.find(" adapters=");
    if (a != std::string::npos && b != std::string::npos &&
        info_.state_format.substr(0, a) == want.substr(0, b))
      fail("session {}: saved with AQUA-KV adapters of checksum {}, the cache's adapters have {} "
           "(recalibrated or another file)", name_, info_.state_format.substr(a + 10), want.substr(b + 10));
    fail("session {}: stored as '{}', the cache is '{}'", name_, info_.state_format, want);
  }
  cache.load_state(seq, *this);
  if (cache.n_tokens(seq) != int64_t(info_.tokens.size()))
    fail("session {}: the state holds {} tokens, the header lists {}", name_, cache.n_tokens(seq), info_.tokens.size());
}

double session_bits_per_value(uint64_t bytes, int64_t n_tokens, int64_t n_layers, int64_t width) {
  const double values = double(n_tokens) * double(n_layers) * 2.0 * double(width);
  return values > 0 ? 8.0 * double(bytes) / values : 0.0;
}

int64_t SessionFile::size(const std::string& section) const {
  const auto it = index_.find(section);
  return it == index_.end() ? -1 : int64_t(sections_[it->second].raw_bytes);
}

void SessionFile::get(const std::string& section, void* dst, int64_t bytes) const {
  const auto it = index_.find(section);
  if (it == index_.end()) fail("session {}: no section '{}'", name_, section);
  const SessionSection& s = sections_[it->second];
  if (bytes != int64_t(s.raw_bytes)) fail("session {}: section '{}' holds {} bytes, {} asked", name_, section, s.raw_bytes, bytes);
  const uint8_t* src = bytes_.data() + s.offset;
  if (s.codec == SectionCodec::kRaw) {
    if (bytes > 0) std::memcpy(dst, src, size_t(bytes));
    return;
  }
  const size_t k = ZSTD_decompress(dst, size_t(bytes), src, s.stored_bytes);
  if (ZSTD_isError(k) || k != size_t(bytes))
    fail("session {}: section '{}' does not decompress to its {} bytes", name_, section, bytes);
}

}  // namespace aquakv
