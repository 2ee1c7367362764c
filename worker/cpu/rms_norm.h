// RMSNorm as Hugging Face's LlamaRMSNorm in f32: y = (x * rsqrt(mean(x²) + eps)) * weight.
//
// The sum of squares runs in 16 lanes over the row in increasing index, then a fixed lane
// reduction: the result for a row depends only on that row.
#pragma once

#include <cstdint>

namespace reflect::cpu {

// Normalizes one row of `size` floats from `input` into `output` (they may alias).
void RmsNormRow(const float* input, const float* weight, int64_t size, float epsilon,
                float* output);

}  // namespace reflect::cpu
