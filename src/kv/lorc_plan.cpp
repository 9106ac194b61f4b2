// LoRC plan files (kv/lorc_plan.h).
#include "aquakv/kv/lorc_plan.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "aquakv/kv/file_envelope.h"
#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'L', 'O', 'R', 'C'};

void check_stream(const LorcStream& s, int64_t C, const std::string& what) {
  if (s.rank < 1 || s.rank > C) fail("{}: rank {} outside [1, {}]", what, s.rank, C);
  if (int64_t(s.basis.size()) != C * s.rank || int64_t(s.offset.size()) != C)
    fail("{}: basis of {} values and offset of {} for rank {} and width {}", what, s.basis.size(), s.offset.size(), s.rank, C);
  for (float x : s.basis)
    if (!std::isfinite(x)) fail("{}: basis value {} is not finite", what, x);
  for (float x : s.offset)
    if (!std::isfinite(x)) fail("{}: offset value {} is not finite", what, x);
  // Orthonormal columns: the latent is then a projection, and reconstruction its transpose.
  const int64_t r = s.rank;
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = i; j < r; ++j) {
      double dot = 0.0;
      for (int64_t c = 0; c < C; ++c) dot += double(s.basis[size_t(c * r + i)]) * double(s.basis[size_t(c * r + j)]);
      if (std::fabs(dot - (i == j ? 1.0 : 0.0)) > 1e-3)
        fail("{}: basis columns {} and {} are not orthonormal (dot {:.6f})", what, i, j, dot);
    }
}

void put_floats(ByteWriter& w, const std::vector<float>& v) { w.append(v.data(), v.size() * sizeof(float)); }

std::vector<float> get_floats(ByteReader& r, int64_t n, const char* field) {
  const auto b = r.bytes(uint64_t(n) * sizeof(float), field);
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

}  // namespace

int64_t LorcPlan::latent_width() const {
  int64_t w = 0;
  for (const auto& l : layers) w += l[0].rank + l[1].rank;
  return w;
}

void check_lorc_plan(const LorcPlan& plan, const std::string& what) {
  const int64_t C = plan.model.kv_width;
  if (int64_t(plan.layers.size()) != plan.model.n_layers)
    fail("{}: {} layers for a model of {}", what, plan.layers.size(), plan.model.n_layers);
  for (size_t l = 0; l < plan.layers.size(); ++l)
    for (int s = 0; s < 2; ++s)
      check_stream(plan.layers[l][size_t(s)], C, fmt::format("{}: layer {} {}", what, l, s == 0 ? "keys" : "values"));
}

void save_lorc_plan(LorcPlan& plan, const std::string& path) {
  check_lorc_plan(plan, "LoRC plan " + path);
  ByteWriter w;
  const size_t length_at = begin_envelope(w, kMagic, kLorcPlanVersion);
  write_fingerprint(w, plan.model);
  for (const auto& l : plan.layers)
    for (const LorcStream& s : l) {
      w.put<int64_t>(s.rank);
      w.put<double>(s.condition);
      put_floats(w, s.basis);
      put_floats(w, s.offset);
    }
  w.str(plan.notes);
  plan.checksum = end_envelope(w, length_at);
  write_file_atomic(path, w.bytes(), "LoRC plan");
}

LorcPlan parse_lorc_plan(std::span<const uint8_t> bytes, const std::string& name) {
  const std::string what = "LoRC plan " + name;
  ByteReader r(bytes, what);
  LorcPlan p;
  p.checksum = check_envelope(r, bytes, kMagic, kLorcPlanVersion, what, "LoRC plan");
  p.model = read_fingerprint(r, what);
  const int64_t C = p.model.kv_width;
  p.layers.resize(size_t(p.model.n_layers));
  for (auto& l : p.layers)
    for (LorcStream& s : l) {
      s.rank = r.get<int64_t>("rank");
      if (s.rank < 1 || s.rank > C) fail("{}: rank {} outside [1, {}]", what, s.rank, C);
      s.condition = r.get<double>("condition");
      s.basis = get_floats(r, C * s.rank, "basis");
      s.offset = get_floats(r, C, "offset");
    }
  p.notes = r.str("notes");
  if (r.remaining() != 8) fail("{}: {} unexpected bytes after the notes", what, r.remaining() - 8);
  check_lorc_plan(p, what);
  return p;
}

LorcPlan load_lorc_plan(const std::string& path) {
  const std::string bytes = read_file(path, "LoRC plan", ReadKind::kData);
  return parse_lorc_plan(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), path);
}

}  // namespace aquakv
