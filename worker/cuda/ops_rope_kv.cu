// RoPE and the KV write (cuda_ops.h): one block per token. The block computes cos/sin of its
// position once (in double from the f32 angle, then rounded: the correctly rounded values
// worker/cpu/rope.h uses), rotates the q and k heads in place and stores bf16 k and v into the
// token's slot of the paged cache.
#include <cuda_bf16.h>

#include <cassert>
#include <cstdint>

#include "worker/cuda/ops_launch.h"

namespace reflect::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// Dynamic shared memory: cos of every frequency, then sin (head_dim floats).
__global__ void __launch_bounds__(kThreads)
    RotateAndStoreKernel(float* qkv, AttentionBatch batch, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, const float* inverse_frequencies, Bf16* key_cache,
                         Bf16* value_cache) {
  extern __shared__ float cos_sin[];
  const int64_t token = blockIdx.x;
  const int64_t half = head_dim / 2;
  const int32_t position = batch.positions[token];
  for (int64_t index = threadIdx.x; index < half; index += kThreads) {
    const float angle = static_cast<float>(position) * inverse_frequencies[index];
    double sine, cosine;
    sincos(static_cast<double>(angle), &sine, &cosine);
    cos_sin[index] = static_cast<float>(cosine);
    cos_sin[half + index] = static_cast<float>(sine);
  }
  __syncthreads();

  const int64_t sequence = batch.token_sequence[token];
  const int64_t block =
      batch.block_tables[sequence * batch.max_blocks_per_sequence + position / batch.block_size];
  assert(block >= 0 && block < batch.num_blocks);
  const int64_t slot = position % batch.block_size;
  const int64_t slot_offset = (block * batch.block_size + slot) * kv_heads * head_dim;
  Bf16* keys = key_cache + slot_offset;
  Bf16* values = value_cache + slot_offset;
  float* row = qkv + token * (heads + 2 * kv_heads) * head_dim;

  // Pairs (i, i + half) of every q head, then every k head (k heads follow the q heads).
  for (int64_t pair = threadIdx.x; pair < (heads + kv_heads) * half; pair += kThreads) {
    const int64_t head = pair / half;
    const int64_t index = pair % half;
    float* vector = row + head * head_dim;
    const float first = vector[index];
    const float second = vector[index + half];
    const float cosine = cos_sin[index];
    const float sine = cos_sin[half + index];
    // x·cos + rotate_half(x)·sin, rotate_half(x) = (-x[half:], x[:half]).
    const float rotated_first = first * cosine + (-second) * sine;
    const float rotated_second = second * cosine + first * sine;
    vector[index] = rotated_first;
    vector[index + half] = rotated_second;
    if (head >= heads) {
      Bf16* key = keys + (head - heads) * head_dim;
      key[index] = __float2bfloat16_rn(rotated_first);
      key[index + half] = __float2bfloat16_rn(rotated_second);
    }
  }
  const float* value_row = row + (heads + kv_heads) * head_dim;
  for (int64_t index = threadIdx.x; index < kv_heads * head_dim; index += kThreads) {
    values[index] = __float2bfloat16_rn(value_row[index]);
  }
}

}  // namespace

cudaError_t RotateAndStore(float* qkv, const AttentionBatch& batch, int64_t heads, int64_t kv_heads,
                           int64_t head_dim, const float* inverse_frequencies, Bf16* key_cache,
                           Bf16* value_cache, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(batch.tokens));
  const size_t shared_bytes = static_cast<size_t>(head_dim) * sizeof(float);
  RotateAndStoreKernel<<<grid, kThreads, shared_bytes, stream>>>(
      qkv, batch, heads, kv_heads, head_dim, inverse_frequencies, key_cache, value_cache);
  return cudaGetLastError();
}

}  // namespace reflect::cuda::kernels
