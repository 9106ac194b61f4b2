// libFuzzer entry for the KVSharer layer-sharing plan parser (kv/layer_share.h, format
// docs/ADAPTERS.md "Layer-sharing plans"): every input must either parse or throw aquakv::Error;
// anything else (crash, sanitizer report, other exception, hang) is a bug. A parsed plan must
// pass the plan check again. The corpus fuzz/corpus/layer_share
// (scripts/make_layer_share_seeds.py) is replayed by CTest (fuzz_replay_layer_share).
#include <cstddef>
#include <cstdint>
#include <span>

#include "aquakv/kv/layer_share.h"
#include "aquakv/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const aquakv::LayerSharePlan p = aquakv::parse_layer_share_plan(std::span<const uint8_t>(data, size), "fuzz");
    aquakv::check_layer_share_plan(p.source, "fuzz");
    (void)p.n_shared();
  } catch (const aquakv::Error&) {
  }
  return 0;
}
