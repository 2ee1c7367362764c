#include "worker/model_shard.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/dtype.h"

namespace reflect {
namespace {

// Rows [begin, begin + count) of a row-major [rows, columns] view, without copying.
TensorView RowSlice(const TensorView& view, int64_t begin, int64_t count) {
  TensorView slice = view;
  slice.shape[0] = count;
  slice.data = view.data + begin * view.shape[1] * DTypeSize(view.dtype);
  return slice;
}

// Columns [begin, begin + count) of every row, gathered into memory `model` owns.
TensorView ColumnSlice(const TensorView& view, int64_t begin, int64_t count, ShardedModel& model) {
  if (begin == 0 && count == view.shape[1]) return view;
  const int64_t rows = view.shape[0];
  const size_t element = DTypeSize(view.dtype);
  const size_t source_row = view.shape[1] * element;
  const size_t slice_row = count * element;
  auto& buffer = model.gathered.emplace_back(std::make_unique<std::byte[]>(rows * slice_row));
  for (int64_t row = 0; row < rows; ++row) {
    std::memcpy(buffer.get() + row * slice_row, view.data + row * source_row + begin * element,
                slice_row);
  }
  TensorView slice = view;
  slice.shape[1] = count;
  slice.data = buffer.get();
  return slice;
}

absl::Status CheckShard(const ModelConfig& config, const ModelShard& shard) {
  const int64_t tp = shard.tp_size;
  if (tp < 1 || shard.tp_rank < 0 || shard.tp_rank >= tp) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model shard: tp_rank %d of tp_size %d", shard.tp_rank, tp));
  }
  if (shard.layer_begin < 0 || shard.layer_begin >= shard.layer_end ||
      shard.layer_end > config.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model shard: layers [%d, %d) of a %d-layer model", shard.layer_begin,
                        shard.layer_end, config.num_hidden_layers));
  }
  const int64_t heads = config.num_attention_heads;
  const int64_t kv_heads = config.num_key_value_heads;
  if (heads % tp != 0 || (kv_heads % tp != 0 && tp % kv_heads != 0) ||
      config.intermediate_size % tp != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor parallel %d does not divide the model: %d attention heads and intermediate size "
        "%d must be multiples of it, and %d KV heads a multiple or a divisor of it",
        tp, heads, config.intermediate_size, kv_heads));
  }
  if (VocabRangeOf(config.vocab_size, shard.tp_size, shard.tp_size - 1).begin >=
      config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor parallel %d leaves a rank without rows of the %d-token vocabulary",
                        tp, config.vocab_size));
  }
  return absl::OkStatus();
}

}  // namespace

ModelShard WholeModel(const ModelConfig& config) {
  ModelShard shard;
  shard.layer_end = config.num_hidden_layers;
  return shard;
}

ModelShard ShardOf(const ParallelLayout& layout, const ModelConfig& config) {
  const ParallelLayout::Layers layers = layout.LayerRange(layout.stage(), config.num_hidden_layers);
  ModelShard shard;
  shard.tp_rank = layout.tp_rank();
  shard.tp_size = layout.tensor_parallel;
  shard.layer_begin = layers.begin;
  shard.layer_end = layers.end;
  shard.first_stage = layout.is_first_stage();
  shard.last_stage = layout.is_last_stage();
  return shard;
}

VocabRange VocabRangeOf(int64_t vocab_size, int tp_size, int tp_rank) {
  const int64_t rows = (vocab_size + tp_size - 1) / tp_size;
  const int64_t begin = std::min(vocab_size, tp_rank * rows);
  return {begin, std::min(vocab_size, begin + rows)};
}

absl::StatusOr<ShardedModel> ShardModel(const ModelConfig& config, const LlamaWeights& weights,
                                        const ModelShard& shard) {
  if (absl::Status status = CheckShard(config, shard); !status.ok()) return status;
  const int64_t tp = shard.tp_size;
  const int64_t head_dim = config.head_dim;
  const int64_t heads = config.num_attention_heads / tp;
  const int64_t kv_heads = std::max<int64_t>(1, config.num_key_value_heads / tp);
  // With tp > kv_heads, tp / kv_heads consecutive ranks share one KV head.
  const int64_t first_kv_head = config.num_key_value_heads >= tp
                                    ? shard.tp_rank * kv_heads
                                    : shard.tp_rank / (tp / config.num_key_value_heads);
  const int64_t intermediate = config.intermediate_size / tp;
  const VocabRange vocab = VocabRangeOf(config.vocab_size, shard.tp_size, shard.tp_rank);

  ShardedModel model;
  model.shard = shard;
  model.config = config;
  model.config.num_attention_heads = heads;
  model.config.num_key_value_heads = kv_heads;
  model.config.intermediate_size = intermediate;
  model.config.vocab_size = vocab.end - vocab.begin;
  model.config.num_hidden_layers = shard.layer_end - shard.layer_begin;
  model.full_vocab_size = config.vocab_size;
  model.vocab_begin = vocab.begin;
  model.first_kv_head = first_kv_head;
  model.weights.norm = weights.norm;
  if (shard.first_stage) {
    model.weights.embed_tokens =
        RowSlice(weights.embed_tokens, vocab.begin, vocab.end - vocab.begin);
  }
  if (shard.last_stage) {
    model.weights.lm_head = RowSlice(weights.lm_head, vocab.begin, vocab.end - vocab.begin);
  }
  for (int64_t index = shard.layer_begin; index < shard.layer_end; ++index) {
    const LlamaLayerWeights& layer = weights.layers[index];
    LlamaLayerWeights& local = model.weights.layers.emplace_back();
    local.input_layernorm = layer.input_layernorm;
    local.post_attention_layernorm = layer.post_attention_layernorm;
    local.q_proj = RowSlice(layer.q_proj, shard.tp_rank * heads * head_dim, heads * head_dim);
    local.k_proj = RowSlice(layer.k_proj, first_kv_head * head_dim, kv_heads * head_dim);
    local.v_proj = RowSlice(layer.v_proj, first_kv_head * head_dim, kv_heads * head_dim);
    local.o_proj =
        ColumnSlice(layer.o_proj, shard.tp_rank * heads * head_dim, heads * head_dim, model);
    local.gate_proj = RowSlice(layer.gate_proj, shard.tp_rank * intermediate, intermediate);
    local.up_proj = RowSlice(layer.up_proj, shard.tp_rank * intermediate, intermediate);
    local.down_proj =
        ColumnSlice(layer.down_proj, shard.tp_rank * intermediate, intermediate, model);
  }
  return model;
}

}  // namespace reflect
