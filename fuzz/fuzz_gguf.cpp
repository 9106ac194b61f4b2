// libFuzzer entry for the GGUF parser: every input must either parse or throw aquakv::Error;
// anything else (crash, sanitizer report, other exception, hang) is a bug. Inputs that parse
// are exercised further: typed getters on every key and dequantization of each tensor's first
// row, so bounds derived from the file are used, not just computed.
// Build and run: see docs/GGUF.md ("Fuzzing").
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aquakv/engine/gguf.h"
#include "aquakv/ops/ggml_types.h"
#include "aquakv/util/error.h"

namespace {

void exercise(const aquakv::GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) {
    try { (void)f.get_u64(key); } catch (const aquakv::Error&) {}
    try { (void)f.get_f64_or(key, 0.0); } catch (const aquakv::Error&) {}
    try { (void)f.get_string(key); } catch (const aquakv::Error&) {}
    try { (void)f.get_bool_or(key, false); } catch (const aquakv::Error&) {}
    try { (void)f.get_string_array(key); } catch (const aquakv::Error&) {}
    try { (void)f.get_f64_array(key); } catch (const aquakv::Error&) {}
    try { (void)f.get_i64_array(key); } catch (const aquakv::Error&) {}
  }
  std::vector<float> row;
  for (const auto& t : f.tensors()) {
    if (!aquakv::ggml_type_info(uint32_t(t.type))->supported) continue;
    const int64_t n = t.shape[0];
    if (n == 0 || n > (int64_t(1) << 16) || t.n_values == 0) continue;
    row.resize(size_t(n));
    aquakv::dequantize_row(t.type, t.data, row.data(), n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool allow : {false, true}) {
    try {
      const auto f = aquakv::GgufFile::from_memory(std::span<const uint8_t>(data, size), "fuzz",
                                                   {.allow_unsupported_types = allow});
      exercise(*f);
    } catch (const aquakv::Error&) {
    }
  }
  return 0;
}
