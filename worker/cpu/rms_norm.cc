#include "worker/cpu/rms_norm.h"

#include <immintrin.h>

#include <cmath>

#include "worker/cpu/vector_math.h"

namespace reflect::cpu {

void RmsNormRow(const float* input, const float* weight, int64_t size, float epsilon,
                float* output) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t index = 0; index < size; index += kLanes) {
    const __m512 value = _mm512_maskz_loadu_ps(FirstLanes(size - index), input + index);
    sum = _mm512_fmadd_ps(value, value, sum);
  }
  const float mean = SumLanes(sum) / static_cast<float>(size);
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(mean + epsilon));
  for (int64_t index = 0; index < size; index += kLanes) {
    const __mmask16 mask = FirstLanes(size - index);
    const __m512 value = _mm512_maskz_loadu_ps(mask, input + index);
    const __m512 normalized = _mm512_mul_ps(value, scale);
    _mm512_mask_storeu_ps(output + index, mask,
                          _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weight + index), normalized));
  }
}

}  // namespace reflect::cpu
