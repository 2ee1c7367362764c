// Device helpers of the ops_*.cu kernels: aligned vectors for 16-byte memory accesses, bf16
// conversions, and warp reductions whose order of operations is fixed (batch invariance).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "worker/cuda/cuda_ops.h"

namespace reflect::cuda::kernels {

// `kCount` values moved by one aligned load or store (at most 16 bytes: 4 floats, 8 bf16).
template <typename T, int kCount>
struct alignas(sizeof(T) * kCount) Vector {
  T values[kCount];
};

template <typename T, int kCount>
__device__ inline Vector<T, kCount> LoadVector(const T* address) {
  return *reinterpret_cast<const Vector<T, kCount>*>(address);
}

template <typename T, int kCount>
__device__ inline void StoreVector(T* address, const Vector<T, kCount>& vector) {
  *reinterpret_cast<Vector<T, kCount>*>(address) = vector;
}

// 8 bf16 (16 bytes) read through the read-only cache, still packed.
__device__ inline uint4 LoadBf16x8(const Bf16* address) {
  return __ldg(reinterpret_cast<const uint4*>(address));
}

// 8 packed bf16 widened to floats (exact: a bf16 is the high half of the float's bits).
__device__ inline void WidenBf16x8(const uint4& packed, float* values) {
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int index = 0; index < 4; ++index) {
    values[2 * index] = __uint_as_float(words[index] << 16);
    values[2 * index + 1] = __uint_as_float(words[index] & 0xffff0000u);
  }
}

// Sum and max over each aligned group of `kWidth` lanes (a power of two, at most 32) by an XOR
// butterfly: every lane of the group ends with the same bits, and the order of the additions
// depends only on the lanes' positions. Every lane of the warp must call it.
template <int kWidth>
__device__ inline float GroupSum(float value) {
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <int kWidth>
__device__ inline float GroupMax(float value) {
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Blocks for a grid-stride loop over `count` items, `per_block` a block: enough to fill the
// device many times over, within the grid's x limit.
inline unsigned int GridStrideBlocks(int64_t count, int64_t per_block) {
  const int64_t blocks = (count + per_block - 1) / per_block;
  return static_cast<unsigned int>(blocks < 65536 ? blocks : 65536);
}

}  // namespace reflect::cuda::kernels
