// Kernels that move or transform values one by one: embedding rows, SwiGLU, KV block copies and
// f32 <-> bf16 conversions (cuda_ops.h). None reduces anything, so none depends on the batch.
#include <cuda_bf16.h>

#include <cstdint>

#include "worker/cuda/ops_device.cuh"
#include "worker/cuda/ops_launch.h"

namespace reflect::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// One block per token. Vectorized: 8 values (16 bytes of bf16) per thread and step.
template <bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    EmbedTokensKernel(const int32_t* token_ids, const Bf16* table, int64_t vocab_begin,
                      int64_t vocab_rows, int64_t hidden, float* residual) {
  constexpr int kWidth = kVectorized ? 8 : 1;
  const int64_t token = blockIdx.x;
  const int64_t row = static_cast<int64_t>(token_ids[token]) - vocab_begin;
  // Ids of another rank's part of the vocabulary give a zero row.
  const bool present = row >= 0 && row < vocab_rows;
  const Bf16* source = table + (present ? row : 0) * hidden;
  float* destination = residual + token * hidden;
  for (int64_t index = static_cast<int64_t>(threadIdx.x) * kWidth; index < hidden;
       index += static_cast<int64_t>(blockDim.x) * kWidth) {
    if constexpr (kVectorized) {
      float values[8] = {};
      if (present) WidenBf16x8(LoadBf16x8(source + index), values);
      Vector<float, 4> low, high;
#pragma unroll
      for (int lane = 0; lane < 4; ++lane) {
        low.values[lane] = values[lane];
        high.values[lane] = values[4 + lane];
      }
      StoreVector(destination + index, low);
      StoreVector(destination + index + 4, high);
    } else {
      destination[index] = present ? __bfloat162float(source[index]) : 0.0f;
    }
  }
}

// torch.nn.functional.silu: x·sigmoid(x) = x / (1 + e^-x), with the accurate expf.
__device__ inline float Silu(float x) { return x / (1.0f + expf(-x)); }

// Block (row, chunk of kThreads·kWidth columns); kWidth values per thread.
template <int kWidth>
__global__ void __launch_bounds__(kThreads)
    SiluAndMultiplyKernel(const float* gate_up, int64_t intermediate, Bf16* out) {
  const int64_t row = blockIdx.x;
  const int64_t column =
      (static_cast<int64_t>(blockIdx.y) * kThreads + static_cast<int64_t>(threadIdx.x)) * kWidth;
  if (column >= intermediate) return;
  const float* gate = gate_up + row * 2 * intermediate + column;
  const Vector<float, kWidth> gates = LoadVector<float, kWidth>(gate);
  const Vector<float, kWidth> ups = LoadVector<float, kWidth>(gate + intermediate);
  Vector<Bf16, kWidth> result;
#pragma unroll
  for (int lane = 0; lane < kWidth; ++lane) {
    result.values[lane] = __float2bfloat16_rn(Silu(gates.values[lane]) * ups.values[lane]);
  }
  StoreVector(out + row * intermediate + column, result);
}

// Block (copy, cache): copies one KV block of one layer's keys or values.
// (No launch bounds: ptxas would cap it at 32 registers for full occupancy and spill.)
__global__ void CopyBlocksKernel(Bf16* const* layer_caches, const int32_t* sources,
                                 const int32_t* destinations, int64_t block_elements) {
  Bf16* cache = layer_caches[blockIdx.y];
  const Bf16* source = cache + static_cast<int64_t>(sources[blockIdx.x]) * block_elements;
  Bf16* destination = cache + static_cast<int64_t>(destinations[blockIdx.x]) * block_elements;
  const bool vectorized =
      block_elements % 8 == 0 && reinterpret_cast<uintptr_t>(cache) % sizeof(uint4) == 0;
  if (vectorized) {
    const uint4* from = reinterpret_cast<const uint4*>(source);
    uint4* to = reinterpret_cast<uint4*>(destination);
    for (int64_t index = threadIdx.x; index < block_elements / 8; index += kThreads) {
      to[index] = from[index];
    }
  } else {
    for (int64_t index = threadIdx.x; index < block_elements; index += kThreads) {
      destination[index] = source[index];
    }
  }
}

__device__ __forceinline__ Bf16 Converted(float value, Bf16*) { return __float2bfloat16_rn(value); }
__device__ __forceinline__ float Converted(Bf16 value, float*) { return __bfloat162float(value); }

// out[i] = input[i] in the other type (to bf16: round to nearest even), grid-stride.
template <typename From, typename To>
__global__ void __launch_bounds__(kThreads)
    ConvertKernel(const From* input, int64_t count, To* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; index < count;
       index += stride) {
    out[index] = Converted(input[index], out);
  }
}

template <typename From, typename To>
cudaError_t LaunchConvert(const From* input, int64_t count, To* out, cudaStream_t stream) {
  ConvertKernel<<<GridStrideBlocks(count, kThreads), kThreads, 0, stream>>>(input, count, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t EmbedTokens(const int32_t* token_ids, int64_t tokens, const Bf16* table,
                        int64_t vocab_begin, int64_t vocab_rows, int64_t hidden, bool vectorized,
                        float* residual, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(tokens));
  if (vectorized) {
    EmbedTokensKernel<true><<<grid, kThreads, 0, stream>>>(token_ids, table, vocab_begin,
                                                           vocab_rows, hidden, residual);
  } else {
    EmbedTokensKernel<false><<<grid, kThreads, 0, stream>>>(token_ids, table, vocab_begin,
                                                            vocab_rows, hidden, residual);
  }
  return cudaGetLastError();
}

cudaError_t SiluAndMultiply(const float* gate_up, int64_t rows, int64_t intermediate,
                            bool vectorized, Bf16* out, cudaStream_t stream) {
  const int width = vectorized ? 4 : 1;
  const int64_t chunks = (intermediate + kThreads * width - 1) / (kThreads * width);
  const dim3 grid(static_cast<unsigned int>(rows), static_cast<unsigned int>(chunks));
  if (vectorized) {
    SiluAndMultiplyKernel<4><<<grid, kThreads, 0, stream>>>(gate_up, intermediate, out);
  } else {
    SiluAndMultiplyKernel<1><<<grid, kThreads, 0, stream>>>(gate_up, intermediate, out);
  }
  return cudaGetLastError();
}

cudaError_t CopyBlocks(Bf16* const* layer_caches, int64_t layers, const int32_t* sources,
                       const int32_t* destinations, int64_t count, int64_t block_elements,
                       cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(count), static_cast<unsigned int>(2 * layers));
  CopyBlocksKernel<<<grid, kThreads, 0, stream>>>(layer_caches, sources, destinations,
                                                  block_elements);
  return cudaGetLastError();
}

cudaError_t FloatToBf16(const float* input, int64_t count, Bf16* out, cudaStream_t stream) {
  return LaunchConvert(input, count, out, stream);
}

cudaError_t Bf16ToFloat(const Bf16* input, int64_t count, float* out, cudaStream_t stream) {
  return LaunchConvert(input, count, out, stream);
}

}  // namespace reflect::cuda::kernels
