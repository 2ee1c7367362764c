// Device arithmetic the sampling kernels share with worker/sampler.cc bit for bit: the token
// weight (the CPU kernels' exp, worker/cpu/vector_math.h), the uniform number of the draw
// (common/splitmix64.h), and the order-preserving integer image of a logit that ranks tokens.
//
// Every operation below is written with explicit rounding intrinsics (__fmul_rn, __fmaf_rn,
// ...), so nvcc cannot contract or reorder it: the results equal the host's exactly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/splitmix64.h"

namespace reflect::cuda::sampler {

// p · 2^n rounded once, as _mm512_scalef_ps, for p in [0.5, 2) and n in [-149, 127]: a power of
// two built from its bits, in two exact factors when 2^n is below the normal range, so only the
// last multiplication rounds (gradually: nvcc keeps denormals without -ftz).
__device__ __forceinline__ float ScaleByPowerOfTwo(float p, int n) {
  if (n >= -126) return __fmul_rn(p, __int_as_float((n + 127) << 23));
  return __fmul_rn(__fmul_rn(p, __int_as_float((n + 64 + 127) << 23)), 0x1.0p-64f);
}

// cpu::Exp (worker/cpu/vector_math.h) lane for lane, for x <= 0: the same clamps, the same
// Cody-Waite reduction and degree-7 polynomial with the same fused multiply-adds, then scalef.
// So a weight here is the host's weight, bit for bit (checked on every float in [-110, 0]).
__device__ __forceinline__ float CpuExp(float x) {
  x = fmaxf(x, -103.0f);
  x = fminf(x, 88.8f);
  const float n = rintf(__fmul_rn(x, 1.44269504088896341f));  // nearest, ties to even
  float r = __fmaf_rn(-n, 0.693145751953125f, x);
  r = __fmaf_rn(-n, 1.428606765330187e-06f, r);
  float p = 1.0f / 5040.0f;
  p = __fmaf_rn(p, r, 1.0f / 720.0f);
  p = __fmaf_rn(p, r, 1.0f / 120.0f);
  p = __fmaf_rn(p, r, 1.0f / 24.0f);
  p = __fmaf_rn(p, r, 1.0f / 6.0f);
  p = __fmaf_rn(p, r, 0.5f);
  p = __fmaf_rn(p, r, 1.0f);
  p = __fmaf_rn(p, r, 1.0f);
  return ScaleByPowerOfTwo(p, static_cast<int>(n));
}

// A token's weight e^(logit - max) as worker/sampler.cc's WeightOf: exactly 0 below -103 (so
// for -inf) and for NaN, so such a token is never drawn nor listed. logit - max <= 0.
__device__ __forceinline__ float TokenWeight(float logit_minus_max) {
  return logit_minus_max >= -103.0f ? CpuExp(logit_minus_max) : 0.0f;
}

__device__ __forceinline__ uint64_t SplitMix64MixOnDevice(uint64_t value) {
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
  return value ^ (value >> 31);
}

// SamplingUniform (worker/sampler.cc): integer mixing, then 53 bits times 2^-53, both exact.
__device__ __forceinline__ double SamplingUniformOnDevice(uint64_t seed, int64_t position) {
  const uint64_t stream = SplitMix64MixOnDevice(seed);
  const uint64_t counter = static_cast<uint64_t>(position) + 1;
  const uint64_t bits = SplitMix64MixOnDevice(stream + counter * kSplitMix64Gamma);
  return __dmul_rn(__ull2double_rn(bits >> 11), 0x1.0p-53);
}

// An unsigned image of a non-NaN float that orders as the float does, with -0 and +0 equal
// (equal logits must tie, to be ranked by id).
__device__ __forceinline__ uint32_t OrderedBits(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits << 1) == 0) bits = 0;  // -0 as +0
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ float FromOrderedBits(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) != 0 ? key & 0x7fffffffu : ~key);
}

}  // namespace reflect::cuda::sampler
