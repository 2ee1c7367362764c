// AVX-512 helpers shared by the CPU kernels: exp, SiLU, masks, bf16 rounding of activations.
//
// Every function is a fixed instruction sequence per lane, so a value's result never depends on
// its neighbours in the vector — the property batch invariance rests on.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace reflect::cpu {

inline constexpr int kLanes = 16;  // f32 lanes in a zmm register

// The mask selecting the first `count` lanes (count >= 16 selects all).
inline __mmask16 FirstLanes(int64_t count) {
  return count >= kLanes ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>((1u << count) - 1u);
}

// GCC 12's unmasked max/min/roundscale/scalef start from an "undefined" register, which
// -Wmaybe-uninitialized flags once inlined; the all-lanes masked forms are the same instruction.
inline constexpr __mmask16 kAllLanes = 0xffff;

// e^x, relative error about 2e-7 over the f32 range; underflows to 0, saturates at +inf.
inline __m512 Exp(__m512 x) {
  x = _mm512_mask_max_ps(x, kAllLanes, x, _mm512_set1_ps(-103.0f));
  x = _mm512_mask_min_ps(x, kAllLanes, x, _mm512_set1_ps(88.8f));
  const __m512 scaled = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_mask_roundscale_ps(scaled, kAllLanes, scaled,
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_mask_scalef_ps(p, kAllLanes, p, n);
}

// x * sigmoid(x) = x / (1 + e^-x), as torch.nn.functional.silu.
inline __m512 Silu(__m512 x) {
  const __m512 denominator =
      _mm512_add_ps(_mm512_set1_ps(1.0f), Exp(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  return _mm512_div_ps(x, denominator);
}

// Rounds `count` floats to bf16 (nearest even) into `destination`.
inline void RoundToBf16(const float* source, int64_t count, uint16_t* destination) {
  for (int64_t index = 0; index < count; index += kLanes) {
    const __mmask16 mask = FirstLanes(count - index);
    const __m512 values = _mm512_maskz_loadu_ps(mask, source + index);
    const __m256i rounded = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(values));
    _mm256_mask_storeu_epi16(destination + index, mask, rounded);
  }
}

// Sum of the 16 lanes as a fixed pairwise tree (lane i with lane i + 8, then + 4, + 2, + 1).
inline float SumLanes(__m512 values) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, values);
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int lane = 0; lane < width; ++lane) lanes[lane] += lanes[lane + width];
  }
  return lanes[0];
}

// Largest of the 16 lanes (exact, so order does not matter).
inline float MaxLanes(__m512 values) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, values);
  float maximum = lanes[0];
  for (int lane = 1; lane < kLanes; ++lane) maximum = lanes[lane] > maximum ? lanes[lane] : maximum;
  return maximum;
}

}  // namespace reflect::cpu
