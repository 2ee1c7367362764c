// The CUDA backend's own kernels (DESIGN §6, issue #5): everything of a Llama step but the GEMMs
// (cuBLASLt, cuda_gemm.h) and sampling (cuda_sampler.h). Each has a CPU reference in worker/cpu/
// and a test comparing them on random inputs at odd sizes (tests/cuda_ops_test.cc).
//
// Conventions:
// - Pointers are device memory; every call enqueues on `stream` and returns at once. A launch
//   error comes back as INTERNAL naming the kernel (cudaGetLastError after the launch); a bad
//   argument (negative size, head_dim not even, ...) as INVALID_ARGUMENT before any launch.
// - The residual stream and every GEMM output are f32; GEMM inputs are bf16 (`Bf16`); reductions
//   accumulate in f32.
// - Batch invariance (`--deterministic` and always here): every reduction runs in an order fixed
//   by the row (norms: one block per row) or by the sequence's own length (attention: splits of a
//   fixed number of keys), never by the batch; so a row's results are bit-identical in any batch.
// - KV cache, per layer: keys and values are each [num_blocks][block_size][kv_heads][head_dim]
//   bf16; token `position` of a sequence lives in block block_table[position / block_size], slot
//   position % block_size.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace reflect::cuda {

using Bf16 = __nv_bfloat16;

// residual[t, :] = f32(table[token_ids[t], :]) for t < tokens; table is [vocab, hidden] bf16
// holding rows [vocab_begin, vocab_begin + vocab_rows) of the vocabulary (tensor parallelism:
// ids outside it give zero rows, summed over ranks by the caller's all-reduce).
absl::Status EmbedTokens(const int32_t* token_ids, int64_t tokens, const Bf16* table,
                         int64_t vocab_begin, int64_t vocab_rows, int64_t hidden, float* residual,
                         cudaStream_t stream);

// Hugging Face LlamaRMSNorm: out[r, :] = bf16(x * rsqrt(mean(x²) + epsilon) * weight) with x =
// input[rows_index[r], :] (rows_index null: x = input[r, :]), for r < rows. f32 math; one block
// per row, sum of squares in a fixed order. `weight` is [hidden] f32.
absl::Status RmsNorm(const float* input, const int32_t* rows_index, int64_t rows, int64_t hidden,
                     const float* weight, float epsilon, Bf16* out, cudaStream_t stream);

// What one step's attention needs per token and per sequence (device arrays, filled by the
// backend from the StepPlan).
struct AttentionBatch {
  int64_t tokens = 0;                       // query tokens in the step
  const int32_t* positions = nullptr;       // [tokens] position of each token in its sequence
  const int32_t* token_sequence = nullptr;  // [tokens] index of its sequence in the step
  const int32_t* block_tables = nullptr;    // [sequences][max_blocks_per_sequence]
  int64_t max_blocks_per_sequence = 0;
  int64_t block_size = 0;
  int64_t num_blocks = 0;  // blocks in the pool (bounds checks in debug builds only)
};

// RoPE then KV write, for one layer. `qkv` is the fused projection output, [tokens, (heads +
// 2·kv_heads)·head_dim] f32, q heads then k heads then v heads. Rotates q and k in place as
// Hugging Face's rotate_half (pairs i and i + head_dim/2) with cos/sin of position ·
// inverse_frequencies[i] (the angle rounded to f32, as worker/cpu/rope.h), then writes bf16(k)
// and bf16(v) of every token into its slot of key_cache / value_cache.
// `inverse_frequencies` is [head_dim/2] f32 (llama3 scaling already applied: cpu::Rope).
absl::Status RotateAndStore(float* qkv, const AttentionBatch& batch, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, const float* inverse_frequencies,
                            Bf16* key_cache, Bf16* value_cache, cudaStream_t stream);

// Scratch floats PagedAttention needs for `batch`'s shape: a partial (max, sum, head_dim
// accumulator) per (token, head, split).
int64_t AttentionScratchFloats(int64_t tokens, int64_t heads, int64_t head_dim, int64_t max_context,
                               int64_t keys_per_split);

// Causal grouped-query attention over the paged cache for every query token: token t attends
// keys 0..positions[t] of its sequence (its own K/V already stored by RotateAndStore). Scores
// q·k · scale in f32, softmax in f32, output Σ softmax·v. The keys are cut into splits of
// `keys_per_split` (a multiple of block_size; the same for every sequence, so a token's result
// depends only on its own context); each split keeps (max, sum, accumulator) in `scratch`, and a
// second kernel combines the splits in increasing order. One kernel for decode (one query per
// sequence) and chunked prefill (many). `q` is the q part of RotateAndStore's qkv (row stride
// (heads + 2·kv_heads)·head_dim); `out` is [tokens, heads·head_dim] bf16 (o_proj's input).
// `max_context` bounds positions[t] + 1 (it sizes the grid). Shapes: head_dim 64 or 128 with up
// to 8 query heads per KV head, or head_dim 32 with up to 4 (INVALID_ARGUMENT otherwise).
absl::Status PagedAttention(const float* qkv, const AttentionBatch& batch, int64_t heads,
                            int64_t kv_heads, int64_t head_dim, float scale, const Bf16* key_cache,
                            const Bf16* value_cache, int64_t max_context, int64_t keys_per_split,
                            float* scratch, Bf16* out, cudaStream_t stream);

// SwiGLU: out[r, i] = bf16(silu(gate_up[r, i]) · gate_up[r, intermediate + i]); gate_up is the
// fused gate/up projection output [rows, 2·intermediate] f32.
absl::Status SiluAndMultiply(const float* gate_up, int64_t rows, int64_t intermediate, Bf16* out,
                             cudaStream_t stream);

// Copies whole KV blocks: for each i < count, block destinations[i] ← block sources[i] in every
// layer's key and value cache (copy-on-write). `layer_caches` is [2·layers] device pointers
// (keys of layer 0, values of layer 0, keys of layer 1, ...); each block is `block_elements`
// bf16 values (block_size·kv_heads·head_dim).
absl::Status CopyBlocks(Bf16* const* layer_caches, int64_t layers, const int32_t* sources,
                        const int32_t* destinations, int64_t count, int64_t block_elements,
                        cudaStream_t stream);

// f32 → bf16 (round to nearest even), and bf16 → f32, `count` values.
absl::Status FloatToBf16(const float* input, int64_t count, Bf16* out, cudaStream_t stream);
absl::Status Bf16ToFloat(const Bf16* input, int64_t count, float* out, cudaStream_t stream);

}  // namespace reflect::cuda
