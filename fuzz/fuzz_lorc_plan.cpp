// libFuzzer entry for the LoRC plan parser (kv/lorc_plan.h, format docs/ADAPTERS.md "LoRC
// plans"): every input must either parse or throw aquakv::Error; anything else (crash, sanitizer
// report, other exception, hang) is a bug. A parsed plan is used further: a cache is built on it
// and one row per layer is appended and attended, so the ranks and bases the file declares are
// used, not only checked. The corpus fuzz/corpus/lorc_plan (scripts/make_lorc_seeds.py) is
// replayed by CTest (fuzz_replay_lorc_plan).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aquakv/kv/lorc_cache.h"
#include "aquakv/kv/lorc_plan.h"
#include "aquakv/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    aquakv::LorcPlan p = aquakv::parse_lorc_plan(std::span<const uint8_t>(data, size), "fuzz");
    aquakv::check_lorc_plan(p, "fuzz");
    const aquakv::ModelFingerprint m = p.model;
    if (m.kv_width > 1024 || m.n_layers > 64) return 0;  // keep the exercise small
    aquakv::KvShape shape;
    shape.n_layers = int(m.n_layers);
    shape.n_kv_heads = int(m.n_kv_heads);
    shape.head_dim = int(m.head_dim);
    shape.max_tokens = 4;
    auto cache = aquakv::make_lorc_cache(shape, std::move(p), 1, "fuzz");
    const int seq = cache->add_sequence();
    std::vector<float> k(static_cast<size_t>(2 * m.kv_width), 0.5f), q(k.size()), out(k.size());
    cache->begin_step(seq, 2);
    for (int l = 0; l < shape.n_layers; ++l) {
      cache->append(l, k.data(), k.data());
      aquakv::KvAttention a;
      a.n = 2;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = shape.n_kv_heads;
      a.scale = 1.0f;
      cache->attend(l, a);
    }
    cache->end_step();
  } catch (const aquakv::Error&) {
  }
  return 0;
}
