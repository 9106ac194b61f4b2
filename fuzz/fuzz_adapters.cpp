// libFuzzer entry for the adapter-file parser (kv/adapters.h, format docs/ADAPTERS.md): every
// input must either parse or throw aquakv::Error; anything else (crash, sanitizer report, other
// exception, hang) is a bug. Inputs that parse are exercised further: every predictor map is
// applied to one row of ones, so the shapes the file declares are used, not only checked.
// Build and run: docs/SECURITY.md ("Fuzzing"); the corpus fuzz/corpus/adapters is replayed by
// CTest (fuzz_replay_adapters).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aquakv/kv/adapters.h"
#include "aquakv/util/error.h"

namespace {

void exercise(const aquakv::AffineMap& m) {
  if (m.empty()) return;
  const std::vector<float> x(static_cast<size_t>(m.in), 1.0f);
  std::vector<float> y(static_cast<size_t>(m.out));
  std::vector<float> scratch;
  const aquakv::AffineInput in{x.data(), m.in, m.in};
  m.apply(1, &in, 1, y.data(), m.out, scratch);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const aquakv::Adapters a = aquakv::parse_adapters(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& l : a.layers) {
      exercise(l.key);
      exercise(l.value);
    }
  } catch (const aquakv::Error&) {
  }
  return 0;
}
