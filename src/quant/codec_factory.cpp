// make_codec: spec strings -> codecs (grammar in quant/codec.h). Every parameter is checked
// here or in the codec constructors, so a bad spec fails at construction with one line naming
// the spec, the field, what was expected and what was given.
#include <charconv>
#include <string>
#include <vector>

#include "aquakv/quant/block_codecs.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/grid.h"
#include "aquakv/quant/higgs.h"
#include "aquakv/quant/rotated_block_codec.h"
#include "aquakv/util/error.h"

namespace aquakv {

namespace {

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t p = s.find(sep, start);
    out.emplace_back(s.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

// Parses a decimal integer in [lo, hi]; the whole string must be the number.
int64_t parse_int(std::string_view spec, std::string_view field, std::string_view text, int64_t lo,
                  int64_t hi) {
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    fail("codec '{}': {} must be an integer, got '{}'", spec, field, text);
  }
  if (v < lo || v > hi) fail("codec '{}': {} must be in [{}, {}], got {}", spec, field, lo, hi, v);
  return v;
}

std::unique_ptr<Codec> make_uniform(std::string_view spec, const std::vector<std::string>& parts,
                                    int64_t dim) {
  if (parts.size() < 2) fail("codec '{}': expected uniform:<bits>[:g<G>][:token|:channel]", spec);
  const int bits = int(parse_int(spec, "bits", parts[1], 1, 8));
  int64_t group = 32;
  UniformAxis axis = UniformAxis::kToken;
  for (size_t i = 2; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "token") {
      axis = UniformAxis::kToken;
    } else if (p == "channel") {
      axis = UniformAxis::kChannel;
    } else if (!p.empty() && p[0] == 'g') {
      group = parse_int(spec, "group size g", std::string_view(p).substr(1), 1, 65536);
    } else {
      fail("codec '{}': unknown uniform option '{}' (expected g<G>, token or channel)", spec, p);
    }
  }
  return std::make_unique<UniformCodec>(dim, bits, group, axis);
}

std::unique_ptr<Codec> make_higgs(std::string_view spec, std::string_view body, int64_t dim) {
  // body = "<d>x<n>[:g<G>][:seed<S>][:grid=<path>]"; the path may contain ':'.
  std::string grid_path;
  const size_t gp = body.find(":grid=");
  if (gp != std::string_view::npos) {
    grid_path = std::string(body.substr(gp + 6));
    body = body.substr(0, gp);
    if (grid_path.empty()) fail("codec '{}': grid= needs a file path", spec);
  }
  const auto parts = split(body, ':');
  const size_t x = parts[0].find('x');
  if (x == std::string::npos) fail("codec '{}': expected higgs:<d>x<n>, got '{}'", spec, parts[0]);
  const int d = int(parse_int(spec, "grid dimension d", std::string_view(parts[0]).substr(0, x), 1, kMaxGridDim));
  const int64_t n = parse_int(spec, "grid size n", std::string_view(parts[0]).substr(x + 1), 2, kMaxGridPoints);
  int64_t group = 0;
  uint64_t seed = 0;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.rfind("seed", 0) == 0) {
      seed = uint64_t(parse_int(spec, "sign seed", std::string_view(p).substr(4), 0, INT64_MAX));
    } else if (!p.empty() && p[0] == 'g') {
      group = parse_int(spec, "group size g", std::string_view(p).substr(1), 1, 65536);
    } else {
      fail("codec '{}': unknown higgs option '{}' (expected g<G>, seed<S> or grid=<file>)", spec, p);
    }
  }
  if (group == 0) group = higgs_default_group(dim);
  if (!grid_path.empty()) {
    const Grid g = load_grid_file(grid_path, d, n);
    return std::make_unique<HiggsCodec>(dim, group, g, seed);
  }
  return std::make_unique<HiggsCodec>(dim, group, builtin_grid(d, n), seed);
}

// "q8_0r", "q4_0r", "q4_1r", each optionally ":h<H>" (the rotated head size).
std::unique_ptr<Codec> make_rotated(std::string_view spec, const std::vector<std::string>& parts,
                                    int64_t dim) {
  const std::string kind = parts[0].substr(0, parts[0].size() - 1);
  if (parts.size() > 2 || (parts.size() == 2 && (parts[1].empty() || parts[1][0] != 'h')))
    fail("codec '{}': expected {}[:h<H>] (H: the head size rotated)", spec, parts[0]);
  const int64_t head = parts.size() == 2
                           ? parse_int(spec, "head size h", std::string_view(parts[1]).substr(1), 1, 65536)
                           : 0;
  return std::make_unique<RotatedBlockCodec>(kind, dim, head);
}

}  // namespace

std::unique_ptr<Codec> make_codec(std::string_view spec, int64_t dim, KvStream stream) {
  if (dim < 1) fail("codec '{}': width must be >= 1, got {}", spec, dim);
  if (spec == "fp16" || spec == "f16") return std::make_unique<Fp16Codec>(dim);
  if (spec == "q8_0" || spec == "q4_0" || spec == "q4_1") return std::make_unique<GgmlBlockCodec>(spec, dim);
  if (spec == "kivi2" || spec == "kivi3" || spec == "kivi4") {
    const int bits = spec[4] - '0';
    if (stream == KvStream::kAny) {
      fail("codec '{}': KIVI uses different formats for keys and values; say which stream", spec);
    }
    return std::make_unique<UniformCodec>(dim, bits, 32,
                                          stream == KvStream::kKey ? UniformAxis::kChannel : UniformAxis::kToken);
  }
  if (spec == "higgs2") return make_higgs(spec, "2x16", dim);
  if (spec == "higgs3") return make_higgs(spec, "2x64", dim);
  if (spec == "higgs4") return make_higgs(spec, "2x256", dim);
  if (spec.rfind("higgs:", 0) == 0) return make_higgs(spec, spec.substr(6), dim);
  const auto parts = split(spec, ':');
  if (parts[0] == "uniform") return make_uniform(spec, parts, dim);
  if (parts[0] == "q8_0r" || parts[0] == "q4_0r" || parts[0] == "q4_1r") return make_rotated(spec, parts, dim);
  fail("codec '{}': unknown format (expected fp16, q8_0, q4_0, q4_1, q8_0r|q4_0r|q4_1r[:h<H>], uniform:<bits>[:g<G>][:token|:channel], "
       "kivi2, kivi3, kivi4, higgs:<d>x<n>[:g<G>][:seed<S>][:grid=<file>], higgs2, higgs3, higgs4)", spec);
}

}  // namespace aquakv
