// Per-user cache of self-calibrated adapters (calib/adapter_cache.h).
#include "aquakv/calib/adapter_cache.h"

#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include "aquakv/engine/fingerprint.h"
#include "aquakv/kv/compressed_formats.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

// A codec spec as a file-name part: letters, digits, '.', '_' and '-' only.
std::string name_part(const std::string& spec) {
  std::string s;
  for (char c : spec) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    s += ok ? c : '.';
  }
  return s;
}

AdapterQuantConfig quant_of(const Model& model, const SelfCalibration& s) {
  return aquakv_quant_config(s.key_codec, s.value_codec, s.layer0, model.config().kv_width());
}

}  // namespace

std::string self_adapter_file_name(const Model& model, const SelfCalibration& s) {
  const AdapterQuantConfig q = quant_of(model, s);
  const std::string stem = name_part(fs::path(model.path()).stem().string());
  return fmt::format("{}-{:016x}-{}-{}-{}-self{}w{}s{}.aqkv", stem, model.meta_hash(), name_part(q.key_codec),
                     name_part(q.value_codec), name_part(q.layer0_codec), s.gen_tokens, s.window, s.seed);
}

CachedAdapters cached_self_adapters(const Model& model, const SelfCalibration& s, const std::string& dir,
                                    const std::function<void(const std::string&)>& on_calibrate,
                                    const std::function<void(const char*, int64_t, int64_t)>& progress) {
  CachedAdapters out;
  out.path = (fs::path(dir) / self_adapter_file_name(model, s)).string();
  // The cache spec "aquakv:PATH,p=..." is cut at the first ','.
  if (out.path.find(',') != std::string::npos)
    fail("adapter cache {}: the path must not contain ',' (set AQUAKV_CACHE to another directory)", dir);
  std::error_code ec;
  if (fs::exists(out.path, ec)) {
    try {
      const Adapters a = load_adapters(out.path);
      check_adapters_match(a, model_fingerprint(model.config().arch, model.meta_hash(), model.kv_shape(0)), quant_of(model, s), out.path);
    } catch (const Error& e) {
      fail("{} (cached adapters: delete {} to recalibrate)", e.what(), out.path);
    }
    return out;
  }
  fs::create_directories(dir, ec);
  if (ec) fail("adapter cache {}: cannot create the directory: {}", dir, ec.message());
  if (on_calibrate) on_calibrate(out.path);
  CalibrateOptions o;
  o.model_path = model.path();
  o.gen_tokens = s.gen_tokens;
  o.window = s.window;
  o.tokens = std::max(o.tokens, s.window);
  o.key_codec = s.key_codec;
  o.value_codec = s.value_codec;
  o.layer0 = s.layer0;
  o.seed = s.seed;
  o.threads = s.threads;
  const auto t0 = std::chrono::steady_clock::now();
  const Adapters a = calibrate(o, nullptr, progress);
  if (a.model.meta_hash != model.meta_hash())
    fail("adapter cache: {} changed during calibration (fingerprint {:016x}, now {:016x})", model.path(),
         model.meta_hash(), a.model.meta_hash);
  save_adapters(a, out.path);
  out.calibrated = true;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace aquakv
