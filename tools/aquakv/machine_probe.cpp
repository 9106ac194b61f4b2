#include "machine_probe.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "aquakv/util/parallel.h"

namespace aquakv::cli {
namespace {
using clock = std::chrono::steady_clock;
double seconds_since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }
}  // namespace

double measure_read_bandwidth() {
  const int64_t n = (int64_t(256) << 20) / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(n), 1);
  std::vector<uint64_t> sums(64, 0);
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = clock::now();
    parallel_for(n, [&](int64_t a, int64_t b) {
      // Four independent sums so the loop is bound by loads, not by one add chain.
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = a;
      for (; i + 4 <= b; i += 4) { s0 += buf[size_t(i)]; s1 += buf[size_t(i + 1)]; s2 += buf[size_t(i + 2)]; s3 += buf[size_t(i + 3)]; }
      for (; i < b; ++i) s0 += buf[size_t(i)];
      sums[size_t(a * 63 / n)] += s0 + s1 + s2 + s3;
    }, 1 << 16);
    best = std::max(best, double(n * 8) / seconds_since(t0));
  }
  if (sums[0] == 42) best += 1;  // keep the sums alive
  return best;
}

double measure_sgemm_rate() {
  const int m = 512;
  std::vector<float> a(size_t(m) * m, 0.5f), b(size_t(m) * m, 0.25f), c(size_t(m) * m);
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, m, m, 1.0f, a.data(), m, b.data(), m, 0.0f, c.data(), m);
    best = std::max(best, 2.0 * m * m * double(m) / seconds_since(t0));
  }
  return best;
}

}  // namespace aquakv::cli
