// libFuzzer entry for the grid-file parser (quant/grid.h, .f32le files): every input must either
// parse or throw aquakv::Error. Input layout (this target's own): byte 0 chooses the dimension
// d = byte0 % 16 + 1, the rest is the file's contents, and n = rest / (4 d) as a file name
// "...n<n>xd<d>.f32le" would declare it (a size that is not a multiple is a size mismatch).
// Grids that parse (up to 256 points, no cell table) are exercised further: the nearest-point search is built on
// them and run on a few queries (duplicate points, huge or tiny coordinates), and every index it
// returns must be in range.
// Build and run: docs/SECURITY.md ("Fuzzing"); the corpus fuzz/corpus/grid is replayed by CTest.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "aquakv/quant/grid.h"
#include "aquakv/quant/nearest.h"
#include "aquakv/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int d = data[0] % 16 + 1;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  const int64_t n = int64_t(body.size()) / (4 * d) + (body.size() % (4 * d) != 0 ? 1 : 0);
  try {
    const aquakv::Grid g = aquakv::parse_grid(body, d, n, "fuzz.n0xd0.f32le");
    // The search structures cost far more than the parse (the 1-D/2-D cell table of a grid with
    // >= 64 points visits 1024-4096 cells x n points): building them for every input cut the
    // rate to a few hundred executions per second. Brute force and the SIMD lanes (n <= 256,
    // no cell table) are searched here; the cell tables and pruning are checked against brute
    // force by tests/test_quant_grid.cpp.
    if (g.n > 256 || (g.d <= 2 && g.n >= aquakv::NearestSearch::kCellMinPoints)) return 0;
    const aquakv::NearestSearch ns(g);
    // Queries: the grid's own first points and their negations.
    const int64_t m = g.n < 8 ? g.n : 8;
    std::vector<float> q(g.points.begin(), g.points.begin() + m * d);
    for (int64_t i = 0; i < m * d; ++i) q.push_back(-q[size_t(i)]);
    std::vector<uint16_t> fast(static_cast<size_t>(2 * m)), brute(static_cast<size_t>(2 * m));
    ns.search(q.data(), 2 * m, fast.data());
    ns.search_brute(q.data(), 2 * m, brute.data());
    for (int64_t i = 0; i < 2 * m; ++i) {
      if (fast[size_t(i)] >= g.n || brute[size_t(i)] >= g.n) __builtin_trap();
    }
  } catch (const aquakv::Error&) {
  }
  return 0;
}
