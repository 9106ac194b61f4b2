// libFuzzer entry for the base-logits file parser (eval/logits_file.h): every input must either
// parse or throw aquakv::Error. Inputs that parse are exercised further: the compatibility check
// against a run built from the file's own header, and the KL of every row against itself (which
// reads every kept token id against the declared vocabulary).
// Build and run: docs/SECURITY.md ("Fuzzing"); the corpus fuzz/corpus/logits is replayed by
// CTest (fuzz_replay_logits).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "aquakv/eval/logits_file.h"
#include "aquakv/eval/stats.h"
#include "aquakv/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = aquakv::eval::LogitsFile::parse(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    f.check_compatible(f.info(), "fuzz");
    (void)f.base_nll(f.n_rows());
    const int64_t V = f.info().n_vocab;
    if (V <= (int64_t(1) << 16)) {
      std::vector<float> logits(static_cast<size_t>(V), 0.0f);
      for (int64_t i = 0; i < f.n_rows() && i < 64; ++i) {
        const auto& row = f.row(i);
        for (const auto& [id, lp] : row.top) logits[id] = lp;
        (void)aquakv::eval::kl_divergence_compact(row, logits.data(), V);
        for (const auto& [id, lp] : row.top) logits[id] = 0.0f;
      }
    }
  } catch (const aquakv::Error&) {
  }
  return 0;
}
