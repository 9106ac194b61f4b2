// Private to src/quant (AVX-512 translation units only): the 16-point FWHT in one register.
// Stage h pairs lane j with lane j ^ h; a lane permute brings each lane its partner p, and
// fma(v, s, p) with s = +1 on the pair's low lane, -1 on its high lane gives a + b and a - b
// with one rounding each (v * +-1 is exact): the scalar reference's butterflies, same bits.
#pragma once

#include <immintrin.h>

namespace aquakv::detail {

inline __m512 fwht16_avx512(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 s1 = _mm512_mask_blend_ps(__mmask16(0xAAAA), one, _mm512_set1_ps(-1.0f));
  const __m512 s2 = _mm512_mask_blend_ps(__mmask16(0xCCCC), one, _mm512_set1_ps(-1.0f));
  const __m512 s4 = _mm512_mask_blend_ps(__mmask16(0xF0F0), one, _mm512_set1_ps(-1.0f));
  const __m512 s8 = _mm512_mask_blend_ps(__mmask16(0xFF00), one, _mm512_set1_ps(-1.0f));
  v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, 0xB1));          // h = 1: swap neighbours
  v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, 0x4E));          // h = 2: swap pairs
  v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, 0xB1));    // h = 4: swap quarters 0<->1, 2<->3
  return _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, 0x4E));  // h = 8: swap halves
}

}  // namespace aquakv::detail
