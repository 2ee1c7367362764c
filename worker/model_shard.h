// ModelShard: the part of a Llama model one rank of a TP × PP replica holds (DESIGN §6), and
// ShardModel, which cuts that part out of the whole model's weights.
//
// Tensor parallelism splits every layer Megatron-style: q/k/v and gate/up by output rows
// (column-parallel: a rank computes its own heads and its slice of the MLP), o_proj and down_proj
// by input columns (row-parallel: a rank's product is a partial sum that an all-reduce completes),
// the embedding and the LM head by vocabulary rows (vocab-parallel: contiguous ranges of
// ceil(vocab / tp) rows, the last one smaller). When tp exceeds the KV heads, each rank keeps the
// one KV head its query heads use, so that head is replicated on tp / kv_heads ranks. Pipeline
// parallelism gives each stage a contiguous range of layers; only the first stage holds the
// embedding and only the last the LM head.
//
// Ownership: row slices are views into the source weights (zero copy: the caller keeps the
// checkpoint alive); column slices are gathered into buffers the ShardedModel owns, so it is
// move-only. Cost of ShardModel: one copy of the shard's o_proj and down_proj columns (none with
// tp = 1); no other weight byte is read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/llama_weights.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

struct ModelShard {
  int tp_rank = 0;
  int tp_size = 1;
  int64_t layer_begin = 0;  // the stage's layers [layer_begin, layer_end)
  int64_t layer_end = 0;
  bool first_stage = true;  // holds the embedding
  bool last_stage = true;   // holds the final norm and the LM head
};

// The whole model as one shard.
ModelShard WholeModel(const ModelConfig& config);
// The shard of `layout`'s rank.
ModelShard ShardOf(const ParallelLayout& layout, const ModelConfig& config);

// The vocabulary rows [begin, end) that TP rank `tp_rank` of `tp_size` holds.
struct VocabRange {
  int64_t begin = 0;
  int64_t end = 0;
};
VocabRange VocabRangeOf(int64_t vocab_size, int tp_size, int tp_rank);

struct ShardedModel {
  ModelShard shard;
  // The shard's sizes: num_attention_heads, num_key_value_heads, intermediate_size and
  // vocab_size are the rank's own; num_hidden_layers counts the stage's layers. The rest is the
  // whole model's.
  ModelConfig config;
  int64_t full_vocab_size = 0;  // token ids are checked against the whole vocabulary
  int64_t vocab_begin = 0;      // the embedding rows and logit columns held start here
  int64_t first_kv_head = 0;    // the whole model's index of local KV head 0
  // Layers [layer_begin, layer_end) only; embed_tokens on the first stage and lm_head on the
  // last, else empty views (no data).
  LlamaWeights weights;
  std::vector<std::unique_ptr<std::byte[]>> gathered;  // the column slices' memory
};

// Cuts `shard` out of `weights`, which must match `config` (cpu::ValidateLlamaWeights).
// INVALID_ARGUMENT, naming the sizes, unless heads % tp == 0, kv_heads % tp == 0 or
// tp % kv_heads == 0, intermediate % tp == 0, every TP rank gets vocabulary rows, and the layer
// range is a non-empty part of the model.
absl::StatusOr<ShardedModel> ShardModel(const ModelConfig& config, const LlamaWeights& weights,
                                        const ModelShard& shard);

}  // namespace reflect
