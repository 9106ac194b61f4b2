// The KV memory budget's estimate (kv_budget.h).
#include "kv_budget.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"

namespace aquakv::serve {

int64_t KvEstimate::bytes(int64_t n) const {
  return int64_t(std::ceil(std::max(0.0, base + per_token * double(n))));
}

KvEstimate measure_kv_estimate(Forward& fwd, const std::string& spec, int64_t n_ctx, int64_t n_probe) {
  const Model& model = fwd.model();
  if (n_probe < 2 || n_probe > n_ctx) fail("KV estimate: probe of {} tokens for a context of {}", n_probe, n_ctx);
  auto cache = make_cache(spec, model.kv_shape(n_ctx));
  const int seq = cache->add_sequence();
  // A fixed token stream (64-bit LCG), away from the first ids (control tokens).
  std::vector<int32_t> ids(static_cast<size_t>(n_probe));
  uint64_t x = 0x9e3779b97f4a7c15ull;
  const int64_t V = model.config().n_vocab;
  for (auto& id : ids) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    id = int32_t(256 + int64_t((x >> 33) % uint64_t(std::max<int64_t>(1, V - 256))));
  }
  const int64_t h = n_probe / 2;
  fwd.eval(*cache, seq, std::span<const int32_t>(ids.data(), size_t(h)), nullptr, false);
  const double b1 = double(cache->live_bytes());
  fwd.eval(*cache, seq, std::span<const int32_t>(ids.data() + h, size_t(n_probe - h)), nullptr, false);
  const double b2 = double(cache->live_bytes());
  KvEstimate e;
  e.probe_tokens = n_probe;
  e.probe_bytes = int64_t(b2);
  e.per_token = std::max(0.0, (b2 - b1) / double(n_probe - h));
  e.base = std::max(b1 - e.per_token * double(h), b2 - e.per_token * double(n_probe));
  return e;
}

}  // namespace aquakv::serve
