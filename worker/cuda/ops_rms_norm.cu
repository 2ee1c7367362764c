// RMSNorm (cuda_ops.h), one block per row. The sum of squares is taken per thread over a fixed
// stride of the row, then across the warp by a butterfly and across warps in warp order: the
// order depends only on `hidden`, so a row's result is the same in any batch.
#include <cuda_bf16.h>

#include <cstdint>

#include "worker/cuda/ops_device.cuh"
#include "worker/cuda/ops_launch.h"

namespace reflect::cuda::kernels {
namespace {

constexpr int kMaxThreads = 512;

// Sum of `value` over the block; every thread gets the same bits. blockDim.x is a multiple of 32.
__device__ float BlockSum(float value) {
  __shared__ float warp_sums[kMaxThreads / 32];
  value = GroupSum<32>(value);
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) warp_sums[warp] = value;
  __syncthreads();
  float sum = 0.0f;
  const int warps = blockDim.x / 32;
  for (int index = 0; index < warps; ++index) sum += warp_sums[index];
  return sum;
}

// kWidth values per thread and step: 4 (16-byte loads) when vectorized.
template <int kWidth>
__global__ void __launch_bounds__(kMaxThreads)
    RmsNormKernel(const float* input, const int32_t* rows_index, int64_t hidden,
                  const float* weight, float epsilon, Bf16* out) {
  const int64_t row = blockIdx.x;
  const int64_t source_row = rows_index != nullptr ? rows_index[row] : row;
  const float* x = input + source_row * hidden;
  const int64_t first = static_cast<int64_t>(threadIdx.x) * kWidth;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kWidth;
  float squares = 0.0f;
  for (int64_t index = first; index < hidden; index += stride) {
    const Vector<float, kWidth> values = LoadVector<float, kWidth>(x + index);
#pragma unroll
    for (int lane = 0; lane < kWidth; ++lane) {
      squares = fmaf(values.values[lane], values.values[lane], squares);
    }
  }
  const float mean = BlockSum(squares) / static_cast<float>(hidden);
  // As the CPU reference (and torch.rsqrt up to rounding): the correctly rounded 1 / sqrt.
  const float scale = 1.0f / sqrtf(mean + epsilon);
  Bf16* y = out + row * hidden;
  for (int64_t index = first; index < hidden; index += stride) {
    const Vector<float, kWidth> values = LoadVector<float, kWidth>(x + index);
    const Vector<float, kWidth> weights = LoadVector<float, kWidth>(weight + index);
    Vector<Bf16, kWidth> result;
#pragma unroll
    for (int lane = 0; lane < kWidth; ++lane) {
      result.values[lane] =
          __float2bfloat16_rn(weights.values[lane] * (values.values[lane] * scale));
    }
    StoreVector(y + index, result);
  }
}

}  // namespace

cudaError_t RmsNorm(const float* input, const int32_t* rows_index, int64_t rows, int64_t hidden,
                    const float* weight, float epsilon, bool vectorized, Bf16* out,
                    cudaStream_t stream) {
  // Enough warps for one step over the row, at most kMaxThreads: fixed by `hidden` alone.
  const int64_t steps = vectorized ? hidden / 4 : hidden;
  const int64_t warps = (steps + 31) / 32;
  const int threads = static_cast<int>(warps * 32 < kMaxThreads ? warps * 32 : kMaxThreads);
  const dim3 grid(static_cast<unsigned int>(rows));
  if (vectorized) {
    RmsNormKernel<4><<<grid, threads, 0, stream>>>(input, rows_index, hidden, weight, epsilon, out);
  } else {
    RmsNormKernel<1><<<grid, threads, 0, stream>>>(input, rows_index, hidden, weight, epsilon, out);
  }
  return cudaGetLastError();
}

}  // namespace reflect::cuda::kernels
