// Sequence state helpers and cross-format copies (kv/kv_state.h), and the KvCache defaults for
// formats that cannot save.
#include "aquakv/kv/kv_state.h"

#include <algorithm>

#include "aquakv/kv/attend.h"
#include "aquakv/ops/half_rows.h"
#include "aquakv/util/parallel.h"

namespace aquakv {

std::string KvCache::state_format() const { return name(); }

void KvCache::save_state(int, KvStateOut&) const {
  fail("kv cache {}: this format cannot save a sequence's state", name());
}

void KvCache::load_state(int, const KvStateIn&) {
  fail("kv cache {}: this format cannot load a sequence's state", name());
}

void KvCache::drop_rows(int, std::span<const int32_t>) {
  fail("kv cache {}: this format cannot drop single rows (eviction needs a format that can)", name());
}

int64_t KvCache::truncate(int seq, int64_t n) {
  if (n >= n_tokens(seq)) return n_tokens(seq);
  clear(seq);
  return 0;
}

void check_dense_positions(const std::vector<int32_t>& pos, int64_t n, const std::string& format) {
  if (int64_t(pos.size()) != n) fail("saved {} state: {} positions for {} tokens", format, pos.size(), n);
  for (int64_t i = 0; i < n; ++i) {
    if (pos[size_t(i)] != i) fail("saved {} state: row {} has position {}, expected {}", format, i, pos[size_t(i)], i);
  }
}

std::vector<uint8_t> rows_to_drop(std::span<const int32_t> held, std::span<const int32_t> drop,
                                  const std::string& format) {
  std::vector<uint8_t> mark(held.size(), 0);
  auto it = held.begin();
  for (size_t i = 0; i < drop.size(); ++i) {
    if (i > 0 && drop[i] <= drop[i - 1])
      fail("kv cache {}: rows to drop must be in ascending order (position {} after {})", format, drop[i], drop[i - 1]);
    it = std::lower_bound(it, held.end(), drop[i]);
    if (it == held.end() || *it != drop[i]) fail("kv cache {}: no row at position {} to drop", format, drop[i]);
    mark[size_t(it - held.begin())] = 1;
  }
  return mark;
}

namespace {

void row_to_floats(const KvView& v, const void* base, int64_t row, int64_t C, float* out) {
  if (v.dtype == KvDtype::F32) {
    const float* p = static_cast<const float*>(base) + row * v.row_stride;
    std::copy_n(p, C, out);
  } else {
    halves_to_floats(static_cast<const uint16_t*>(base) + row * v.row_stride, C, out);
  }
}

}  // namespace

void copy_sequence(KvCache& src, int sseq, KvCache& dst, int dseq) {
  const KvShape& s = src.shape();
  const KvShape& d = dst.shape();
  if (s.n_layers != d.n_layers || s.n_kv_heads != d.n_kv_heads || s.head_dim != d.head_dim)
    fail("kv copy {} -> {}: shapes differ ({} layers x {} heads x {} vs {} x {} x {})", src.name(),
         dst.name(), s.n_layers, s.n_kv_heads, s.head_dim, d.n_layers, d.n_kv_heads, d.head_dim);
  const int64_t T = src.n_tokens(sseq), C = s.width();
  if (T > d.max_tokens) fail("kv copy: {} tokens do not fit a context of {}", T, d.max_tokens);
  dst.clear(dseq);
  if (T == 0) return;
  KvRope rope(s);
  rope.ensure(T);
  std::vector<float> k(size_t(T * C)), v(size_t(T * C));
  std::vector<uint8_t> held(static_cast<size_t>(T), 0);
  src.begin_step(sseq, 0);
  dst.begin_step(dseq, T);
  for (int l = 0; l < s.n_layers; ++l) {
    const KvView view = src.read(l);
    std::fill(held.begin(), held.end(), 0);
    for (int64_t r = 0; r < view.n_tokens; ++r) {
      const int64_t p = view.pos[r];
      if (p < 0 || p >= T || held[size_t(p)]) fail("kv copy: layer {} row {} at position {} outside 0..{} or repeated", l, r, p, T - 1);
      held[size_t(p)] = 1;
    }
    for (int64_t p = 0; p < T; ++p) {
      if (!held[size_t(p)]) {
        std::fill_n(k.data() + p * C, C, 0.0f);
        std::fill_n(v.data() + p * C, C, 0.0f);
      }
    }
    parallel_for(view.n_tokens, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = view.pos[r];
        float* kr = k.data() + p * C;
        row_to_floats(view, view.k, r, C, kr);
        row_to_floats(view, view.v, r, C, v.data() + p * C);
        if (view.k_roped) rope.unrotate(l, kr, p);
      }
    }, 64);
    // A missing row is fine only where no later query can see it (outside the window).
    const int64_t w = s.window_of(l);
    for (int64_t p = 0; p < T; ++p) {
      if (!held[size_t(p)] && !(w > 0 && p <= T - w))
        fail("kv copy {} -> {}: layer {} no longer holds position {}", src.name(), dst.name(), l, p);
    }
    dst.append(l, k.data(), v.data());
  }
  dst.end_step();
  src.end_step();
}

}  // namespace aquakv
