// HIGGS encode/decode (format in quant/higgs.h).
#include "aquakv/quant/higgs.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <type_traits>
#include <vector>

#include "aquakv/quant/bitpack.h"
#include "aquakv/quant/e8p.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "aquakv/ops/half_rows.h"
#include "higgs_kernels.h"
#include "aquakv/util/cpu.h"

namespace aquakv {

namespace {

std::string higgs_spec(int64_t g, const Grid& grid, uint64_t seed) {
  std::string s = fmt::format("higgs:{}x{}:g{}", grid.d, grid.n, g);
  if (seed != 0) s += fmt::format(":seed{}", seed);
  return s;
}

int64_t row_bytes(int64_t dim, int64_t g, const Grid& grid) {
  return 2 * (dim / g) + packed_bytes(dim / grid.d, bits_for_count(grid.n));
}

const Grid& checked(const Grid& grid, int64_t dim, int64_t g) {
  validate_grid(grid, "higgs grid " + grid.name);
  if (dim < 1) fail("higgs: width must be >= 1, got {}", dim);
  if (!hadamard_supported(g)) {
    fail("higgs: group size g={} is not a Hadamard order (2^k <= 65536, 12*2^k or 20*2^k)", g);
  }
  if (dim % g != 0) fail("higgs: group size g={} does not divide the width {}", g, dim);
  if (g % grid.d != 0) fail("higgs: grid dimension d={} does not divide the group size g={}", grid.d, g);
  return grid;
}

}  // namespace

namespace detail {

SignedPatterns signed_patterns(const float* points, int64_t n, int d) {
  SignedPatterns sp;
  if (d != 8 || n < 1) return sp;
  // sigma: +-(distance of point 0's first coordinate from the nearest odd multiple of 1/2).
  const float p00 = points[0];
  const float shift = std::fabs(p00 - (std::floor(p00) + 0.5f));
  auto odd_halves = [](float v) {  // 2v an odd integer
    const float t = 2.0f * v;
    return t == std::nearbyint(t) && std::fmod(t, 2.0f) != 0.0f;
  };
  std::map<std::array<uint32_t, 8>, uint32_t> ids;
  std::vector<uint32_t> code(static_cast<size_t>(n));
  std::vector<float> pat;
  for (int64_t i = 0; i < n; ++i) {
    const float* p = points + 8 * i;
    bool found = false;
    for (const float sigma : {shift, -shift}) {
      std::array<uint32_t, 8> a{};
      uint32_t negs = 0;
      bool ok = true;
      for (int j = 0; j < 8 && ok; ++j) {
        const float v = p[j] - sigma;
        const float rebuilt = (std::signbit(v) ? -std::fabs(v) : std::fabs(v)) + sigma;
        ok = odd_halves(v) && std::bit_cast<uint32_t>(rebuilt) == std::bit_cast<uint32_t>(p[j]);
        a[size_t(j)] = std::bit_cast<uint32_t>(std::fabs(v));
        negs |= uint32_t(std::signbit(v)) << j;
      }
      if (!ok) continue;
      auto it = ids.find(a);
      if (it == ids.end()) {
        if (ids.size() == 256) return sp;
        it = ids.emplace(a, uint32_t(ids.size())).first;
        for (uint32_t bits : a) pat.push_back(std::bit_cast<float>(bits));
      }
      code[size_t(i)] = it->second | negs << 8 | (sigma < 0 ? 0xFFu << 16 : 0u);
      found = true;
      break;
    }
    if (!found) return sp;
  }
  pat.resize(256 * 8, 0.0f);
  sp.pat = std::move(pat);
  sp.code = std::move(code);
  sp.shift = shift;
  return sp;
}

}  // namespace detail

namespace {

// E8P's decomposition, made once per process (256 KiB shared by every E8P codec).
std::shared_ptr<const detail::SignedPatterns> e8p_signed_patterns() {
  static const auto sp = [] {
    const Grid& g = e8p_grid();
    auto made = std::make_shared<detail::SignedPatterns>(detail::signed_patterns(g.points.data(), g.n, g.d));
    return made->code.empty() ? nullptr : std::shared_ptr<const detail::SignedPatterns>(std::move(made));
  }();
  return sp;
}

}  // namespace

int64_t higgs_default_group(int64_t dim) {
  int64_t best = 0;
  for (int64_t g = 1; g <= 1024 && g <= dim; ++g) {
    if (dim % g == 0 && hadamard_supported(g)) best = g;
  }
  if (best < 8) fail("higgs: width {} has no Hadamard group size >= 8 dividing it; give g", dim);
  return best;
}

HiggsCodec::HiggsCodec(int64_t dim, int64_t group, const Grid& grid, uint64_t sign_seed)
    : Codec(higgs_spec(group, grid, sign_seed), dim, 1, row_bytes(dim, group, checked(grid, dim, group))),
      group_(group),
      search_(shared_nearest_search(grid)),
      grid_(search_->grid()),
      code_bits_(bits_for_count(grid.n)),
      codes_per_row_(dim / grid.d),
      rot_(group, sign_seed) {
  std::vector<float> origin(size_t(grid.d), 0.0f);
  search_->search(origin.data(), 1, &zero_code_);
  if (grid_.d == 8 && grid_.n == 65536 && group_ == 192 && is_e8p_grid(grid_)) patterns_ = e8p_signed_patterns();
  if (grid_.d == 2 && code_bits_ == 4) {
    // Byte b holds codes b & 15 (first) and b >> 4: their two points, 4 floats.
    byte_table_.resize(256 * 4);
    for (int b = 0; b < 256; ++b) {
      const int lo = b & 15, hi = b >> 4;
      const bool ok = lo < grid_.n && hi < grid_.n;  // codes >= n never come from encode
      for (int j = 0; j < 2; ++j) {
        byte_table_[size_t(4 * b + j)] = ok ? grid_.points[size_t(2 * lo + j)] : 0.0f;
        byte_table_[size_t(4 * b + 2 + j)] = ok ? grid_.points[size_t(2 * hi + j)] : 0.0f;
      }
    }
  }
}

void HiggsCodec::encode(const float* x, int64_t rows, uint8_t* out) const {
  const int64_t dim = this->dim(), g = group_, ng = dim / g;
  thread_local std::vector<float> buf;
  thread_local std::vector<uint16_t> codes;
  buf.resize(size_t(dim));
  codes.resize(size_t(codes_per_row_));
  const int64_t cpg = g / grid_.d;  // codes per group
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    uint8_t* o = out + r * block_bytes();
    for (int64_t k = 0; k < ng; ++k) {
      const float* xg = xr + k * g;
      // Four independent double accumulators in a fixed order (deterministic, and no serial
      // dependency chain of g additions).
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      int64_t i = 0;
      for (; i + 4 <= g; i += 4) {
        a0 += double(xg[i]) * xg[i];
        a1 += double(xg[i + 1]) * xg[i + 1];
        a2 += double(xg[i + 2]) * xg[i + 2];
        a3 += double(xg[i + 3]) * xg[i + 3];
      }
      for (; i < g; ++i) a0 += double(xg[i]) * xg[i];
      const double ss = (a0 + a1) + (a2 + a3);
      const double s = std::sqrt(ss);
      const float rms = float(s / std::sqrt(double(g)));
      const uint16_t h = fp32_to_fp16(rms > 65504.0f ? 65504.0f : rms);
      o[2 * k] = uint8_t(h);
      o[2 * k + 1] = uint8_t(h >> 8);
      uint16_t* cg = codes.data() + k * cpg;
      if (h == 0 || !(s > 0)) {
        for (int64_t i = 0; i < cpg; ++i) cg[i] = zero_code_;
        continue;
      }
      float* yg = buf.data() + k * g;
      std::memcpy(yg, xg, size_t(g) * 4);
      rot_.forward(yg, 1);
      const float inv = float(1.0 / s);
      for (int64_t t = 0; t < g; ++t) yg[t] *= inv;
      search_->search(yg, cpg, cg);
    }
    pack_bits(codes.data(), codes_per_row_, code_bits_, o + 2 * ng);
  }
}

namespace {

// x[c d .. c d + d) = grid point min(code_at(c), last) for the row's `count` codes: fixed-size
// copies for the common d (D > 0), any d otherwise. Codes >= n cannot come from encode (n not a
// power of two); the clamp keeps corrupt bytes inside the grid.
template <int64_t D, class CodeAt>
void copy_points(const float* pts, int64_t d, int64_t last, int64_t count, CodeAt code_at, float* x) {
  const int64_t dd = D > 0 ? D : d;
  for (int64_t c = 0; c < count; ++c) {
    std::memcpy(x + c * dd, pts + std::min<int64_t>(code_at(c), last) * dd, size_t(dd) * 4);
  }
}

template <class CodeAt>
void copy_points_any(const float* pts, int64_t d, int64_t last, int64_t count, CodeAt code_at, float* x) {
  switch (d) {
    case 1: return copy_points<1>(pts, d, last, count, code_at, x);
    case 2: return copy_points<2>(pts, d, last, count, code_at, x);
    case 4: return copy_points<4>(pts, d, last, count, code_at, x);
    case 8: return copy_points<8>(pts, d, last, count, code_at, x);
    default: return copy_points<0>(pts, d, last, count, code_at, x);
  }
}

}  // namespace

// Gathers one row's grid points (unscaled) into x: the codes of the row in order. Codes read
// straight from the bytes where the width allows (bitpack.h's layout: 16-bit codes are whole
// little-endian uint16, 8-bit codes bytes, 4-bit codes nibbles low first), else unpack_bits.
void HiggsCodec::gather_row(const uint8_t* packed, float* x) const {
  const int64_t d = grid_.d;
  const float* pts = grid_.points.data();
  const int64_t last = grid_.n - 1;
  if (!byte_table_.empty()) {  // d = 2, 4-bit codes: one byte -> 4 floats from a 256-entry table
    for (int64_t b = 0; b < codes_per_row_ / 2; ++b) std::memcpy(x + 4 * b, byte_table_.data() + 4 * packed[b], 16);
    if (codes_per_row_ % 2) std::memcpy(x + 2 * (codes_per_row_ - 1), pts + 2 * (packed[codes_per_row_ / 2] & 15), 8);
    return;
  }
  if (code_bits_ == 16) {
    copy_points_any(pts, d, last, codes_per_row_,
                    [packed](int64_t c) { return int64_t(packed[2 * c] | packed[2 * c + 1] << 8); }, x);
    return;
  }
  if (code_bits_ == 8) {
    copy_points_any(pts, d, last, codes_per_row_, [packed](int64_t c) { return int64_t(packed[c]); }, x);
    return;
  }
  if (code_bits_ == 4) {
    copy_points_any(pts, d, last, codes_per_row_,
                    [packed](int64_t c) { return int64_t((packed[c / 2] >> (4 * (c & 1))) & 15); }, x);
    return;
  }
  if (code_bits_ == 6 && d == 2 && codes_per_row_ % 4 == 0) {  // 2x64: 4 codes per 3 bytes
    for (int64_t b = 0; b < codes_per_row_ / 4; ++b) {
      const uint32_t w = uint32_t(packed[3 * b]) | uint32_t(packed[3 * b + 1]) << 8 | uint32_t(packed[3 * b + 2]) << 16;
      for (int k = 0; k < 4; ++k)
        std::memcpy(x + 8 * b + 2 * k, pts + 2 * std::min<int64_t>((w >> (6 * k)) & 63, last), 8);
    }
    return;
  }
  thread_local std::vector<uint16_t> codes;
  codes.resize(size_t(codes_per_row_));
  unpack_bits(packed, codes_per_row_, code_bits_, codes.data());
  copy_points_any(pts, d, last, codes_per_row_, [](int64_t c) { return int64_t(codes[size_t(c)]); }, x);
}

// The AVX-512 kernel that decodes this codec's groups in registers, rotation included
// (higgs_rebuild192_avx512): groups of 192 without sign flips, grids it has a loader for.
bool HiggsCodec::fused192() const {
  return group_ == 192 && rot_.sign_seed() == 0 && simd_at_least(SimdLevel::kAvx512) &&
         detail::higgs_group192_avx512_fits(grid_.d, grid_.n, code_bits_);
}

void HiggsCodec::decode(const uint8_t* in, int64_t rows, float* x) const { decode_rows(in, rows, x, true); }
void HiggsCodec::decode_inner(const uint8_t* in, int64_t rows, float* u) const { decode_rows(in, rows, u, false); }

void HiggsCodec::inner_to_rows(float* u, int64_t rows) const {
  const int64_t ng = dim() / group_;
  rot_.inverse(u, rows * ng, 1.0f);
}
void HiggsCodec::transpose_to_inner(float* q, int64_t rows) const {
  rot_.forward(q, rows * dim() / group_);
}

void HiggsCodec::decode_rows(const uint8_t* in, int64_t rows, float* x, bool rotate) const {
  const int64_t dim = this->dim(), g = group_, ng = dim / g;
  const float inv_sqrt_g = float(1.0 / std::sqrt(double(g)));
  const bool avx2 = simd_at_least(SimdLevel::kAvx2);
  // d = 2 with 4-bit codes and whole bytes per group: gather and scale group by group.
  const bool by_bytes = !byte_table_.empty() && g % 4 == 0;
  if (rotate && fused192()) {
    detail::higgs_rebuild192_avx512(false, grid_.points.data(), grid_.d, grid_.n, patterns_.get(), in, rows,
                                    block_bytes(), ng, x);
    return;
  }
  if (simd_at_least(SimdLevel::kAvx512) && detail::higgs_pairs_avx512_fits(grid_.d, grid_.n, code_bits_, g)) {
    detail::higgs_decode_pairs_avx512(grid_.points.data(), grid_.n, in, rows, block_bytes(), ng, g, x);
    if (rotate) {
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* o = in + r * block_bytes();
        for (int64_t k = 0; k < ng; ++k)
          if (fp16_to_fp32(uint16_t(o[2 * k] | (o[2 * k + 1] << 8))) != 0.0f) rot_.inverse(x + r * dim + k * g, 1, 1.0f);
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* o = in + r * block_bytes();
    float* xr = x + r * dim;
    if (!by_bytes) gather_row(o + 2 * ng, xr);
    for (int64_t k = 0; k < ng; ++k) {
      const float rms = fp16_to_fp32(uint16_t(o[2 * k] | (o[2 * k + 1] << 8)));
      float* xg = xr + k * g;
      // x_g = D H (yhat * rms / sqrt(g)); a zero scale gives zeros (never a division).
      const float f = rms * inv_sqrt_g;
      if (by_bytes) {
        const uint8_t* bytes = o + 2 * ng + k * (g / 4);
        if (avx2) {
          detail::gather_byte_table_scaled_avx2(byte_table_.data(), bytes, g / 4, f, xg);
        } else {
          for (int64_t b = 0; b < g / 4; ++b) {
            for (int j = 0; j < 4; ++j) xg[4 * b + j] = byte_table_[size_t(4 * bytes[b] + j)] * f;
          }
        }
      } else if (avx2) {
        detail::scale_avx2(xg, g, f);
      } else {
        for (int64_t i = 0; i < g; ++i) xg[i] *= f;
      }
      if (rotate && rms != 0.0f) rot_.inverse(xg, 1, 1.0f);
    }
  }
}

void HiggsCodec::decode_add(const uint8_t* in, int64_t rows, float* y) const {
  if (fused192()) {
    detail::higgs_rebuild192_avx512(true, grid_.points.data(), grid_.d, grid_.n, patterns_.get(), in, rows,
                                    block_bytes(), dim() / group_, y);
    return;
  }
  Codec::decode_add(in, rows, y);
}

void HiggsCodec::decode_fp16(const uint8_t* in, int64_t rows, uint16_t* x) const {
  thread_local std::vector<float> buf;
  buf.resize(size_t(dim()));
  for (int64_t r = 0; r < rows; ++r) {
    decode(in + r * block_bytes(), 1, buf.data());
    floats_to_halves(buf.data(), dim(), x + r * dim());
  }
}

}  // namespace aquakv
