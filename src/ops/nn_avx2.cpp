// AVX2+FMA versions of the ops/nn.h kernels that show up in profiles (softmax in attention, RoPE,
// GeGLU in Gemma's feed-forward).
#include <immintrin.h>

#include <cstdint>

#include "avx2_math.h"

namespace aquakv::detail {

// x = exp(x - max) / sum; the sum is accumulated in f32 lanes (8 partial sums) then in double.
void softmax_avx2(float* x, int64_t n) {
  int64_t i = 0;
  __m256 vm = _mm256_set1_ps(x[0]);
  for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  float mx = hmax_avx2(vm);
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 vs = _mm256_setzero_ps();
  i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
    _mm256_storeu_ps(x + i, e);
    vs = _mm256_add_ps(vs, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vs);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) {
    alignas(32) float t[8] = {x[i] - mx, 0, 0, 0, 0, 0, 0, 0};
    _mm256_store_ps(t, exp_neg_avx2(_mm256_load_ps(t)));
    x[i] = t[0];
    sum += t[0];
  }
  const __m256 inv = _mm256_set1_ps(float(1.0 / sum));
  i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= float(1.0 / sum);
}

// GeGLU, h = gelu(z) * u with gelu's tanh form rewritten as a logistic function:
//   z/2 * (1 + tanh(y)) = z * sigmoid(2y),  y = sqrt(2/pi) * (z + 0.044715 z^3),
//   sigmoid(t) = 1 / (1 + e) for t >= 0 and e / (1 + e) for t < 0, e = exp(-|t|) in (0, 1],
// so exp only sees arguments <= 0 (exp_neg_avx2) and nothing cancels: unlike 1 + tanh(y) for
// negative z, the result keeps its relative precision. Error: t carries ~5 roundings (|t| *
// 3e-7 absolute, which moves sigmoid by at most that relative), exp < 5e-7 relative, then a
// division and two products: relative error <= 1e-6 + 3e-7 |t| (tests check 2e-6 + 4e-7 |t|),
// plus the absolute 2e-38 |z u| of the cut below.
namespace {
inline __m256 geglu8(__m256 z, __m256 u) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 z2 = _mm256_mul_ps(z, z);
  const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), z), z2, z);
  const __m256 t = _mm256_mul_ps(_mm256_set1_ps(2.0f * 0.7978845608028654f), inner);
  // exp(-|t|), and 0 below -87 where exp_neg_avx2 clamps (e^-87 ~ 1.6e-38: the result's
  // absolute error there is below 2e-38 |z u|)
  const __m256 nt = _mm256_or_ps(t, _mm256_set1_ps(-0.0f));
  const __m256 e = _mm256_and_ps(exp_neg_avx2(nt), _mm256_cmp_ps(nt, _mm256_set1_ps(-87.0f), _CMP_GE_OQ));
  const __m256 num = _mm256_blendv_ps(e, one, _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ));
  const __m256 s = _mm256_div_ps(num, _mm256_add_ps(one, e));
  return _mm256_mul_ps(_mm256_mul_ps(z, s), u);
}
}  // namespace

void geglu_avx2(const float* g, const float* u, float* h, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, geglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i == n) return;
  alignas(32) float tg[8] = {}, tu[8] = {};  // the tail through the same lanes
  for (int64_t k = i; k < n; ++k) tg[k - i] = g[k], tu[k - i] = u[k];
  _mm256_store_ps(tg, geglu8(_mm256_load_ps(tg), _mm256_load_ps(tu)));
  for (int64_t k = i; k < n; ++k) h[k] = tg[k - i];
}

// RoPE of n_heads heads with cos/sin c[i], s[i] for pair i (n_rot % 16 == 0).
// NeoX pairs (i, i + n_rot/2): two contiguous halves, rotated 8 pairs at a time.
// Normal pairs (2i, 2i+1): 8 values = 4 pairs; c and s are expanded to [c0 c0 c1 c1 ...] and the
// pair partner is brought in with an in-lane swap, out = x*c + swap(x)*[-s0 s0 -s1 s1 ...].
void rope_rotate_avx2(float* x, int n_heads, int head_dim, int n_rot, bool neox, const float* c,
                      const float* s) {
  const int half = n_rot / 2;
  const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256 sign = _mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1);
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + int64_t(h) * head_dim;
    if (neox) {
      for (int i = 0; i < half; i += 8) {
        const __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
        const __m256 a = _mm256_loadu_ps(xh + i), b = _mm256_loadu_ps(xh + i + half);
        _mm256_storeu_ps(xh + i, _mm256_fmsub_ps(a, vc, _mm256_mul_ps(b, vs)));
        _mm256_storeu_ps(xh + i + half, _mm256_fmadd_ps(a, vs, _mm256_mul_ps(b, vc)));
      }
    } else {
      for (int i = 0; i < half; i += 4) {
        // 4 pairs: cos/sin of pairs i..i+3 duplicated into 8 lanes.
        const __m256 c4 = _mm256_castps128_ps256(_mm_loadu_ps(c + i));
        const __m256 s4 = _mm256_castps128_ps256(_mm_loadu_ps(s + i));
        const __m256 vc = _mm256_permutevar8x32_ps(c4, dup_lo);
        const __m256 vs = _mm256_mul_ps(_mm256_permutevar8x32_ps(s4, dup_lo), sign);
        const __m256 v = _mm256_loadu_ps(xh + 2 * i);
        const __m256 sw = _mm256_permute_ps(v, 0xB1);  // (x1, x0) per pair
        _mm256_storeu_ps(xh + 2 * i, _mm256_fmadd_ps(v, vc, _mm256_mul_ps(sw, vs)));
      }
    }
  }
}

}  // namespace aquakv::detail
