// The launchers behind cuda_ops.h, one per kernel family, implemented in the ops_*.cu files.
//
// cuda_ops.cc checks the arguments and turns results into absl::Status; these only pick the
// launch shape, enqueue on `stream` and return cudaGetLastError() (the .cu files are compiled by
// nvcc as C++17 and use no Abseil beyond the plain types of cuda_ops.h). Preconditions are those
// cuda_ops.cc checks: sizes positive and within the grid limits; `vectorized` only when rows are
// multiples of the vector width and the pointers aligned for it (16 bytes for f32 reads and bf16
// tables, 8 for stores of 4 bf16).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "worker/cuda/cuda_ops.h"

namespace reflect::cuda::kernels {

// Largest GQA group (query heads per KV head) the attention kernel is instantiated for.
inline constexpr int kMaxAttentionGroup = 8;

cudaError_t EmbedTokens(const int32_t* token_ids, int64_t tokens, const Bf16* table,
                        int64_t vocab_begin, int64_t vocab_rows, int64_t hidden, bool vectorized,
                        float* residual, cudaStream_t stream);

cudaError_t SiluAndMultiply(const float* gate_up, int64_t rows, int64_t intermediate,
                            bool vectorized, Bf16* out, cudaStream_t stream);

cudaError_t CopyBlocks(Bf16* const* layer_caches, int64_t layers, const int32_t* sources,
                       const int32_t* destinations, int64_t count, int64_t block_elements,
                       cudaStream_t stream);

cudaError_t FloatToBf16(const float* input, int64_t count, Bf16* out, cudaStream_t stream);
cudaError_t Bf16ToFloat(const Bf16* input, int64_t count, float* out, cudaStream_t stream);

cudaError_t RmsNorm(const float* input, const int32_t* rows_index, int64_t rows, int64_t hidden,
                    const float* weight, float epsilon, bool vectorized, Bf16* out,
                    cudaStream_t stream);

cudaError_t RotateAndStore(float* qkv, const AttentionBatch& batch, int64_t heads, int64_t kv_heads,
                           int64_t head_dim, const float* inverse_frequencies, Bf16* key_cache,
                           Bf16* value_cache, cudaStream_t stream);

// head_dim is 64 or 128 and heads / kv_heads in [1, kMaxAttentionGroup]. `scratch` holds
// tokens·heads·max_splits accumulators of head_dim floats, then as many (max, sum) pairs.
cudaError_t PagedAttention(const float* qkv, const AttentionBatch& batch, int64_t heads,
                           int64_t kv_heads, int64_t head_dim, float scale, const Bf16* key_cache,
                           const Bf16* value_cache, int64_t max_splits, int64_t keys_per_split,
                           float* scratch, Bf16* out, cudaStream_t stream);

}  // namespace reflect::cuda::kernels
