// AVX-512 RoPE (ops/nn.h rope_row): the AVX2 kernel of nn_avx2.cpp on 16 lanes, the same
// multiply, fused multiply-add and order per element, so both give identical floats.
#include <immintrin.h>

// GCC 12 warns inside its own AVX-512 intrinsic headers (_mm512_undefined_* placeholders).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>

namespace aquakv::detail {

// Rotates pairs of each head by the angles whose cos/sin are c[i], s[i] (i < n_rot/2). Normal
// (adjacent pairs): n_rot % 16 == 0; NeoX (pairs i, i + n_rot/2): n_rot % 32 == 0.
void rope_rotate_avx512(float* x, int n_heads, int head_dim, int n_rot, bool neox, const float* c,
                        const float* s) {
  const int half = n_rot / 2;
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512 sign = _mm512_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1);
  for (int h = 0; h < n_heads; ++h) {
    float* xh = x + int64_t(h) * head_dim;
    if (neox) {
      for (int i = 0; i < half; i += 16) {
        const __m512 vc = _mm512_loadu_ps(c + i), vs = _mm512_loadu_ps(s + i);
        const __m512 a = _mm512_loadu_ps(xh + i), b = _mm512_loadu_ps(xh + i + half);
        _mm512_storeu_ps(xh + i, _mm512_fmsub_ps(a, vc, _mm512_mul_ps(b, vs)));
        _mm512_storeu_ps(xh + i + half, _mm512_fmadd_ps(a, vs, _mm512_mul_ps(b, vc)));
      }
    } else {
      for (int i = 0; i < half; i += 8) {
        // 8 pairs: cos/sin of pairs i..i+7 duplicated into 16 lanes.
        const __m512 vc = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c + i)));
        const __m512 vs = _mm512_mul_ps(_mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s + i))), sign);
        const __m512 v = _mm512_loadu_ps(xh + 2 * i);
        const __m512 sw = _mm512_permute_ps(v, 0xB1);  // (x1, x0) per pair
        _mm512_storeu_ps(xh + 2 * i, _mm512_fmadd_ps(v, vc, _mm512_mul_ps(sw, vs)));
      }
    }
  }
}

}  // namespace aquakv::detail
