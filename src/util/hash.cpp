// 64-bit FNV-1a (util/hash.h).
#include "aquakv/util/hash.h"

namespace aquakv {

uint64_t fnv1a64(const void* data, int64_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (int64_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1a64Prime;
  return h;
}

void fnv1a64_many(const void* const* data, const int64_t* n, int64_t count, uint64_t* out) {
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const unsigned char* p[4];
    uint64_t h[4];
    int64_t m = n[i];
    for (int j = 0; j < 4; ++j) {
      p[j] = static_cast<const unsigned char*>(data[i + j]);
      h[j] = kFnv1a64Basis;
      m = n[i + j] < m ? n[i + j] : m;
    }
    for (int64_t b = 0; b < m; ++b) {  // four independent chains
      h[0] = (h[0] ^ p[0][b]) * kFnv1a64Prime;
      h[1] = (h[1] ^ p[1][b]) * kFnv1a64Prime;
      h[2] = (h[2] ^ p[2][b]) * kFnv1a64Prime;
      h[3] = (h[3] ^ p[3][b]) * kFnv1a64Prime;
    }
    for (int j = 0; j < 4; ++j) out[i + j] = fnv1a64(p[j] + m, n[i + j] - m, h[j]);
  }
  for (; i < count; ++i) out[i] = fnv1a64(data[i], n[i]);
}

}  // namespace aquakv
