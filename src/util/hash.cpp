// 64-bit FNV-1a (util/hash.h).
#include "aquakv/util/hash.h"

namespace aquakv {

uint64_t fnv1a64(const void* data, int64_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (int64_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1a64Prime;
  return h;
}

}  // namespace aquakv
