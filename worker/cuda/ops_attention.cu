// Paged attention (cuda_ops.h), flash-decoding style: a split kernel, then a combine kernel.
//
// Split kernel: block (token, kv head, split) attends the split's keys for every query head of
// the kv head's GQA group, so each K and V vector is loaded once per block. A thread is (row,
// slice): a slice is 8 dimensions (16 bytes of bf16) of a K or V vector, a row one key in
// flight; key k of a tile of kAttentionTileKeys keys belongs to row k % rows. For each tile:
//   1. scores: 8-dimension FMA chains per thread, summed over the row's slices by a butterfly,
//      times `scale`, into shared memory (-inf past the split's end); the V slices of the
//      row's keys are loaded into registers at the same time;
//   2. online softmax: per head, one warp takes the tile's max, rescales its running (max, sum)
//      and turns the scores into probabilities exp(score - max);
//   3. values: every row rescales its accumulators and adds probability·v for its keys, in
//      increasing key order.
// At the end the rows' accumulators are summed in row order and (accumulator, max, sum) goes to
// scratch. Combine kernel: block (token, head) merges the splits its position has, in
// increasing order, and writes bf16. Every order is fixed by the token's position and
// keys_per_split alone, so a token's output does not depend on the rest of the batch.
#include <cuda_bf16.h>

#include <cassert>
#include <cstdint>

#include "worker/cuda/ops_device.cuh"
#include "worker/cuda/ops_launch.h"

namespace reflect::cuda::kernels {
namespace {

// Threads per block of the split kernel, and the keys it scores at a time.
constexpr int kAttentionThreads = 128;
constexpr int kAttentionTileKeys = 64;
constexpr int kWarps = kAttentionThreads / 32;
constexpr int kSliceDims = 8;  // dimensions per thread: one 16-byte load of bf16

struct SplitArguments {
  const float* qkv = nullptr;
  int64_t qkv_stride = 0;  // floats per token row of qkv
  AttentionBatch batch;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  float scale = 1.0f;
  const Bf16* key_cache = nullptr;
  const Bf16* value_cache = nullptr;
  int64_t keys_per_split = 0;
  int64_t max_splits = 0;
  float* accumulators = nullptr;  // [tokens][heads][max_splits][head_dim]
  float* statistics = nullptr;    // [tokens][heads][max_splits][2]: max, sum
};

template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kAttentionThreads)
    AttentionSplitKernel(const SplitArguments arguments) {
  constexpr int kSlices = kHeadDim / kSliceDims;
  constexpr int kRows = kAttentionThreads / kSlices;
  constexpr int kKeysPerRow = kAttentionTileKeys / kRows;
  constexpr int kHeadsPerWarp = (kGroup + kWarps - 1) / kWarps;
  static_assert(32 % kSlices == 0, "a row's slices must lie in one warp");
  static_assert(kAttentionTileKeys == 64, "the softmax step gives each lane two keys");
  static_assert(kAttentionTileKeys % kRows == 0, "every row has the same keys per tile");
  static_assert(kGroup <= kSlices, "a lane of the row writes each head's score");

  __shared__ float probabilities[kGroup][kAttentionTileKeys];
  __shared__ float corrections[kGroup];
  __shared__ __align__(16) float row_accumulators[kRows][kGroup][kHeadDim];

  const AttentionBatch& batch = arguments.batch;
  const int64_t token = blockIdx.x;
  const int64_t kv_head = blockIdx.y;
  const int64_t split = blockIdx.z;
  const int64_t position = batch.positions[token];
  const int64_t split_begin = split * arguments.keys_per_split;
  if (split_begin > position) return;  // past this token's context: the whole block leaves
  const int64_t split_end = min(split_begin + arguments.keys_per_split, position + 1);
  const int32_t* block_table =
      batch.block_tables + batch.token_sequence[token] * batch.max_blocks_per_sequence;

  const int slice = threadIdx.x % kSlices;
  const int row = threadIdx.x / kSlices;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t first_head = kv_head * kGroup;

  // This thread's slice of each query of the group.
  float query[kGroup][kSliceDims];
#pragma unroll
  for (int head = 0; head < kGroup; ++head) {
    const float* source = arguments.qkv + token * arguments.qkv_stride +
                          (first_head + head) * kHeadDim + slice * kSliceDims;
    const Vector<float, 4> low = LoadVector<float, 4>(source);
    const Vector<float, 4> high = LoadVector<float, 4>(source + 4);
#pragma unroll
    for (int dim = 0; dim < 4; ++dim) {
      query[head][dim] = low.values[dim];
      query[head][4 + dim] = high.values[dim];
    }
  }
  // Offset of this thread's slice of `key`'s K and V vectors in the caches.
  auto cache_offset = [&](int64_t key) {
    const int64_t block = block_table[key / batch.block_size];
    assert(block >= 0 && block < batch.num_blocks);
    const int64_t slot = key % batch.block_size;
    return ((block * batch.block_size + slot) * arguments.kv_heads + kv_head) * kHeadDim +
           slice * kSliceDims;
  };

  float accumulator[kGroup][kSliceDims];
#pragma unroll
  for (int head = 0; head < kGroup; ++head) {
#pragma unroll
    for (int dim = 0; dim < kSliceDims; ++dim) accumulator[head][dim] = 0.0f;
  }
  // Warp w keeps the running max and sum of heads w, w + kWarps, ... (every lane a copy).
  float running_max[kHeadsPerWarp];
  float running_sum[kHeadsPerWarp];
#pragma unroll
  for (int index = 0; index < kHeadsPerWarp; ++index) {
    running_max[index] = -INFINITY;
    running_sum[index] = 0.0f;
  }

  for (int64_t tile = split_begin; tile < split_end; tile += kAttentionTileKeys) {
    // 1. Scores. Every lane runs the butterflies, valid key or not. The V slices of the same
    //    keys are loaded now too, so that their latency hides behind the scores and softmax.
    uint4 packed_values[kKeysPerRow];
#pragma unroll
    for (int step = 0; step < kKeysPerRow; ++step) {
      const int tile_key = row + step * kRows;
      const bool valid = tile + tile_key < split_end;
      // Keys past the end read the last key instead (unconditional loads schedule early),
      // and their scores are masked.
      const int64_t offset = cache_offset(valid ? tile + tile_key : split_end - 1);
      float keys[kSliceDims];
      WidenBf16x8(LoadBf16x8(arguments.key_cache + offset), keys);
      packed_values[step] = LoadBf16x8(arguments.value_cache + offset);
#pragma unroll
      for (int head = 0; head < kGroup; ++head) {
        float dot = 0.0f;
#pragma unroll
        for (int dim = 0; dim < kSliceDims; ++dim) dot = fmaf(query[head][dim], keys[dim], dot);
        dot = GroupSum<kSlices>(dot);
        if (slice == head) {
          probabilities[head][tile_key] = valid ? dot * arguments.scale : -INFINITY;
        }
      }
    }
    __syncthreads();

    // 2. Online softmax over the tile (the tile's first key is valid: its max is finite).
#pragma unroll
    for (int index = 0; index < kHeadsPerWarp; ++index) {
      const int head = warp + index * kWarps;
      if (head < kGroup) {  // the same for the whole warp
        float* scores = probabilities[head];
        const float first = scores[lane];
        const float second = scores[lane + 32];
        const float tile_max = GroupMax<32>(fmaxf(first, second));
        const float new_max = fmaxf(running_max[index], tile_max);
        const float correction = expf(running_max[index] - new_max);  // 0 on the first tile
        const float first_probability = expf(first - new_max);
        const float second_probability = expf(second - new_max);
        scores[lane] = first_probability;
        scores[lane + 32] = second_probability;
        running_sum[index] =
            running_sum[index] * correction + GroupSum<32>(first_probability + second_probability);
        running_max[index] = new_max;
        if (lane == 0) corrections[head] = correction;
      }
    }
    __syncthreads();

    // 3. Values.
#pragma unroll
    for (int head = 0; head < kGroup; ++head) {
      const float correction = corrections[head];
#pragma unroll
      for (int dim = 0; dim < kSliceDims; ++dim) accumulator[head][dim] *= correction;
    }
#pragma unroll
    for (int step = 0; step < kKeysPerRow; ++step) {
      const int tile_key = row + step * kRows;
      if (tile + tile_key >= split_end) break;  // past the end: not this key's values
      float values[kSliceDims];
      WidenBf16x8(packed_values[step], values);
#pragma unroll
      for (int head = 0; head < kGroup; ++head) {
        const float probability = probabilities[head][tile_key];
#pragma unroll
        for (int dim = 0; dim < kSliceDims; ++dim) {
          accumulator[head][dim] = fmaf(probability, values[dim], accumulator[head][dim]);
        }
      }
    }
    __syncthreads();  // the next tile writes its scores over these probabilities
  }

  // Sum the rows' accumulators in row order; write the split's partials.
#pragma unroll
  for (int head = 0; head < kGroup; ++head) {
    float* destination = &row_accumulators[row][head][slice * kSliceDims];
    Vector<float, 4> low, high;
#pragma unroll
    for (int dim = 0; dim < 4; ++dim) {
      low.values[dim] = accumulator[head][dim];
      high.values[dim] = accumulator[head][4 + dim];
    }
    StoreVector(destination, low);
    StoreVector(destination + 4, high);
  }
  __syncthreads();
  // Partial (token, first_head + h, split) is number first_partial + h·max_splits.
  const int64_t first_partial =
      (token * arguments.heads + first_head) * arguments.max_splits + split;
  for (int element = threadIdx.x; element < kGroup * kHeadDim; element += kAttentionThreads) {
    const int head = element / kHeadDim;
    const int dim = element % kHeadDim;
    float sum = 0.0f;
#pragma unroll
    for (int source_row = 0; source_row < kRows; ++source_row) {
      sum += row_accumulators[source_row][head][dim];
    }
    arguments.accumulators[(first_partial + head * arguments.max_splits) * kHeadDim + dim] = sum;
  }
#pragma unroll
  for (int index = 0; index < kHeadsPerWarp; ++index) {
    const int head = warp + index * kWarps;
    if (head < kGroup && lane == 0) {
      float* statistics = arguments.statistics + 2 * (first_partial + head * arguments.max_splits);
      statistics[0] = running_max[index];
      statistics[1] = running_sum[index];
    }
  }
}

// Block (token, head), one thread per dimension.
__global__ void AttentionCombineKernel(const int32_t* positions, int64_t heads,
                                       int64_t keys_per_split, int64_t max_splits,
                                       const float* accumulators, const float* statistics,
                                       Bf16* out) {
  const int64_t token = blockIdx.x;
  const int64_t head = blockIdx.y;
  const int64_t head_dim = blockDim.x;
  const int64_t dim = threadIdx.x;
  // ceil((position + 1) / keys_per_split): the splits the split kernel wrote for this token.
  const int64_t splits = min((positions[token] + keys_per_split) / keys_per_split, max_splits);
  const int64_t first_partial = (token * heads + head) * max_splits;
  float max = -INFINITY;
  for (int64_t split = 0; split < splits; ++split) {
    max = fmaxf(max, statistics[2 * (first_partial + split)]);
  }
  float sum = 0.0f;
  float value = 0.0f;
  for (int64_t split = 0; split < splits; ++split) {
    const float* split_statistics = statistics + 2 * (first_partial + split);
    const float weight = expf(split_statistics[0] - max);
    sum += split_statistics[1] * weight;
    value += accumulators[(first_partial + split) * head_dim + dim] * weight;
  }
  out[(token * heads + head) * head_dim + dim] = __float2bfloat16_rn(value / sum);
}

// Groups wider than a row's slices (only head_dim 32 has fewer than 8) are refused by
// cuda_ops.cc and never instantiated.
template <int kHeadDim, int kGroup>
void LaunchSplit(const SplitArguments& arguments, const dim3& grid, cudaStream_t stream) {
  if constexpr (kGroup <= kHeadDim / kSliceDims) {
    AttentionSplitKernel<kHeadDim, kGroup><<<grid, kAttentionThreads, 0, stream>>>(arguments);
  }
}

template <int kHeadDim>
void LaunchSplitForGroup(int64_t group, const SplitArguments& arguments, const dim3& grid,
                         cudaStream_t stream) {
  static_assert(kMaxAttentionGroup == 8, "one case per group size");
  switch (group) {
    case 1:
      return LaunchSplit<kHeadDim, 1>(arguments, grid, stream);
    case 2:
      return LaunchSplit<kHeadDim, 2>(arguments, grid, stream);
    case 3:
      return LaunchSplit<kHeadDim, 3>(arguments, grid, stream);
    case 4:
      return LaunchSplit<kHeadDim, 4>(arguments, grid, stream);
    case 5:
      return LaunchSplit<kHeadDim, 5>(arguments, grid, stream);
    case 6:
      return LaunchSplit<kHeadDim, 6>(arguments, grid, stream);
    case 7:
      return LaunchSplit<kHeadDim, 7>(arguments, grid, stream);
    default:  // 8: cuda_ops.cc admits groups of 1 to kMaxAttentionGroup
      return LaunchSplit<kHeadDim, 8>(arguments, grid, stream);
  }
}

}  // namespace

cudaError_t PagedAttention(const float* qkv, const AttentionBatch& batch, int64_t heads,
                           int64_t kv_heads, int64_t head_dim, float scale, const Bf16* key_cache,
                           const Bf16* value_cache, int64_t max_splits, int64_t keys_per_split,
                           float* scratch, Bf16* out, cudaStream_t stream) {
  SplitArguments arguments;
  arguments.qkv = qkv;
  arguments.qkv_stride = (heads + 2 * kv_heads) * head_dim;
  arguments.batch = batch;
  arguments.heads = heads;
  arguments.kv_heads = kv_heads;
  arguments.scale = scale;
  arguments.key_cache = key_cache;
  arguments.value_cache = value_cache;
  arguments.keys_per_split = keys_per_split;
  arguments.max_splits = max_splits;
  arguments.accumulators = scratch;
  arguments.statistics = scratch + batch.tokens * heads * max_splits * head_dim;
  const dim3 split_grid(static_cast<unsigned int>(batch.tokens),
                        static_cast<unsigned int>(kv_heads), static_cast<unsigned int>(max_splits));
  const int64_t group = heads / kv_heads;
  if (head_dim == 32) {
    LaunchSplitForGroup<32>(group, arguments, split_grid, stream);
  } else if (head_dim == 64) {
    LaunchSplitForGroup<64>(group, arguments, split_grid, stream);
  } else {
    LaunchSplitForGroup<128>(group, arguments, split_grid, stream);
  }
  const cudaError_t split_error = cudaGetLastError();
  if (split_error != cudaSuccess) return split_error;
  const dim3 combine_grid(static_cast<unsigned int>(batch.tokens),
                          static_cast<unsigned int>(heads));
  AttentionCombineKernel<<<combine_grid, static_cast<unsigned int>(head_dim), 0, stream>>>(
      batch.positions, heads, keys_per_split, max_splits, arguments.accumulators,
      arguments.statistics, out);
  return cudaGetLastError();
}

}  // namespace reflect::cuda::kernels
