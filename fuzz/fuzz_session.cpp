// libFuzzer entry for the session-file reader (kv/session_file.h, format docs/SESSIONS.md):
// every input must either load or throw aquakv::Error; anything else (crash, sanitizer report,
// other exception, hang) is a bug. Inputs that parse are loaded into a cache of the matching
// kind (fp16, or q8_0 for compressed states) of a small fixed shape and attended over, so the
// rows a file declares are used, not only checked.
//
// Checksums would stop almost every mutation at the first check. When the first input byte is
// odd, the rest is first re-signed (every section hash and the header checksum recomputed
// where the table can be walked), so mutations of the structure and the states get past them.
// The corpus fuzz/corpus/session is replayed by CTest (fuzz_replay_session).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/session_file.h"
#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/hash.h"

namespace {

// Recomputes the checksums of a session file in place, as far as its table can be read.
void resign(std::vector<uint8_t>& b) {
  try {
    aquakv::ByteReader r(b, "fuzz");
    r.bytes(32, "fixed header");
    r.str("arch");
    r.bytes(40, "shape");
    r.str("spec");
    r.str("state");
    r.get<uint64_t>("adapters");
    const int64_t nt = r.get<int64_t>("n_tokens");
    if (nt < 0 || nt > (1 << 20)) return;
    r.bytes(uint64_t(nt) * 4, "tokens");
    const int64_t nl = r.get<int64_t>("n_logits");
    if (nl < 0 || nl > (1 << 20)) return;
    r.bytes(uint64_t(nl) * 4, "logits");
    const uint32_t ns = r.get<uint32_t>("n_sections");
    if (ns > 4096) return;
    for (uint32_t i = 0; i < ns; ++i) {
      r.str("name");
      r.get<uint32_t>("codec");
      const uint64_t off = r.get<uint64_t>("offset");
      r.get<uint64_t>("raw");
      const uint64_t stored = r.get<uint64_t>("stored");
      const size_t at = r.pos();
      r.get<uint64_t>("hash");
      if (off <= b.size() && stored <= b.size() - off) {
        const uint64_t h = aquakv::fnv1a64(b.data() + off, int64_t(stored));
        std::memcpy(b.data() + at, &h, 8);
      }
    }
    const size_t end = r.pos();
    r.get<uint64_t>("checksum");
    const uint64_t h = aquakv::fnv1a64(b.data(), int64_t(end));
    std::memcpy(b.data() + end, &h, 8);
  } catch (const aquakv::Error&) {
  }
}

aquakv::KvShape fuzz_shape() {
  aquakv::KvShape s;
  s.n_layers = 2;
  s.n_kv_heads = 1;
  s.head_dim = 32;
  s.max_tokens = 64;
  s.arch = "llama";
  s.model_hash = 0x0123456789ABCDEFull;
  s.rope.n_rot = 32;
  return s;
}

void exercise(aquakv::KvCache& c, int seq) {
  const int64_t C = c.shape().width();
  if (c.n_tokens(seq) >= c.shape().max_tokens) return;
  const size_t n = static_cast<size_t>(C);
  std::vector<float> k(n, 0.5f), v(n, 0.25f), q(n, 1.0f), out(n);
  c.begin_step(seq, 1);
  for (int l = 0; l < c.shape().n_layers; ++l) {
    c.append(l, k.data(), v.data());
    aquakv::KvAttention a;
    a.n = 1;
    a.q = q.data();
    a.out = out.data();
    a.n_heads = 1;
    a.scale = 0.125f;
    c.attend(l, a);
  }
  c.end_step();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::vector<uint8_t> b(data + 1, data + size);
  if (data[0] & 1) resign(b);
  try {
    const auto f = aquakv::SessionFile::parse(b, "fuzz");
    const bool plain = f->info().state_format.rfind("compressed", 0) != 0;
    auto cache = aquakv::make_cache(plain ? "fp16" : "q8_0,p=0,b=1", fuzz_shape());
    const int seq = cache->add_sequence();
    f->load_into(*cache, seq);
    exercise(*cache, seq);
    cache->truncate(seq, cache->n_tokens(seq) / 2);
    exercise(*cache, seq);
  } catch (const aquakv::Error&) {
  }
  return 0;
}
