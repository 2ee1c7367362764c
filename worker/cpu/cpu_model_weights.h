// CpuModelWeights: a Llama model's weights in the form the CPU kernels use.
//
// Built once from a ShardedModel (the whole model, or one rank's shard of it): each layer's q/k/v
// become one packed matrix (one matmul per layer instead of three), gate/up one interleaved
// matrix for the fused SwiGLU, o/down/lm_head one each; norm weights become f32. The embedding
// table is not copied: lookups read its rows in place (the caller keeps it alive; see
// CreateCpuBackendFromWeights). A shard off the first stage has no embedding, one off the last
// no LM head (empty).
//
// Immutable after construction; safe to read from any thread.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/cpu/packed_matrix.h"
#include "worker/cpu/thread_pool.h"
#include "worker/llama_weights.h"
#include "worker/model_shard.h"

namespace reflect::cpu {

struct CpuLayerWeights {
  std::vector<float> input_norm;  // [hidden]
  PackedMatrix qkv;               // [(heads + 2 * kv_heads) * head_dim, hidden]
  PackedMatrix output;            // o_proj [hidden, heads * head_dim]
  std::vector<float> post_attention_norm;
  PackedMatrix gate_up;  // PackGateUp(gate_proj, up_proj)
  PackedMatrix down;     // [hidden, intermediate]
};

struct CpuModelWeights {
  TensorView embedding;  // [vocab rows, hidden], read in place
  std::vector<CpuLayerWeights> layers;
  std::vector<float> final_norm;
  PackedMatrix lm_head;  // [vocab rows, hidden]

  size_t PackedBytes() const;
};

// Checks `config` for what the kernels need, then every tensor's shape against it.
absl::Status ValidateLlamaWeights(const ModelConfig& config, const LlamaWeights& weights);

// Packs `model`, cut by ShardModel from weights that passed ValidateLlamaWeights.
absl::StatusOr<CpuModelWeights> PrepareCpuModelWeights(const ShardedModel& model, ThreadPool& pool);

// Row `token` of the embedding, as f32.
void EmbeddingRow(const TensorView& embedding, int64_t token, float* output);

}  // namespace reflect::cpu
