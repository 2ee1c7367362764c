#include "worker/cpu/cpu_model_weights.h"

#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/status_macros.h"

namespace reflect::cpu {
namespace {

absl::Status CheckShape(const TensorView& view, std::vector<int64_t> expected,
                        const std::string& name) {
  if (view.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("weight %s has no data", name));
  }
  if (view.shape != expected) {
    return absl::InvalidArgumentError(absl::StrFormat("weight %s: expected shape [%s], found [%s]",
                                                      name, absl::StrJoin(expected, ", "),
                                                      absl::StrJoin(view.shape, ", ")));
  }
  return absl::OkStatus();
}

std::vector<float> ToFloats(const TensorView& view) {
  std::vector<float> values(view.shape.empty() ? 0 : view.shape[0]);
  for (size_t index = 0; index < values.size(); ++index) {
    switch (view.dtype) {
      case DType::kF32:
        std::memcpy(&values[index], view.data + index * 4, 4);
        break;
      case DType::kF16:
      case DType::kBF16: {
        uint16_t bits;
        std::memcpy(&bits, view.data + index * 2, 2);
        values[index] = view.dtype == DType::kF16 ? F16ToF32(bits) : Bf16ToF32(bits);
        break;
      }
    }
  }
  return values;
}

}  // namespace

absl::Status ValidateLlamaWeights(const ModelConfig& config, const LlamaWeights& weights) {
  if (config.hidden_size <= 0 || config.intermediate_size <= 0 || config.num_hidden_layers <= 0 ||
      config.num_attention_heads <= 0 || config.num_key_value_heads <= 0 ||
      config.vocab_size <= 0 || config.head_dim <= 0) {
    return absl::InvalidArgumentError("model config: sizes must be positive");
  }
  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model config: num_attention_heads %d is not a multiple of num_key_value_heads %d",
        config.num_attention_heads, config.num_key_value_heads));
  }
  if (config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError("model config: head_dim must be even for RoPE");
  }
  if (static_cast<int64_t>(weights.layers.size()) != config.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "weights have %d layers, config says %d", weights.layers.size(), config.num_hidden_layers));
  }
  const int64_t hidden = config.hidden_size;
  const int64_t query_width = config.num_attention_heads * config.head_dim;
  const int64_t kv_width = config.num_key_value_heads * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  REFLECT_RETURN_IF_ERROR(
      CheckShape(weights.embed_tokens, {config.vocab_size, hidden}, "embed_tokens"));
  REFLECT_RETURN_IF_ERROR(CheckShape(weights.lm_head, {config.vocab_size, hidden}, "lm_head"));
  REFLECT_RETURN_IF_ERROR(CheckShape(weights.norm, {hidden}, "norm"));
  for (size_t index = 0; index < weights.layers.size(); ++index) {
    const LlamaLayerWeights& layer = weights.layers[index];
    const std::string prefix = absl::StrFormat("layers.%d.", index);
    REFLECT_RETURN_IF_ERROR(
        CheckShape(layer.input_layernorm, {hidden}, prefix + "input_layernorm"));
    REFLECT_RETURN_IF_ERROR(CheckShape(layer.q_proj, {query_width, hidden}, prefix + "q_proj"));
    REFLECT_RETURN_IF_ERROR(CheckShape(layer.k_proj, {kv_width, hidden}, prefix + "k_proj"));
    REFLECT_RETURN_IF_ERROR(CheckShape(layer.v_proj, {kv_width, hidden}, prefix + "v_proj"));
    REFLECT_RETURN_IF_ERROR(CheckShape(layer.o_proj, {hidden, query_width}, prefix + "o_proj"));
    REFLECT_RETURN_IF_ERROR(
        CheckShape(layer.post_attention_layernorm, {hidden}, prefix + "post_attention_layernorm"));
    REFLECT_RETURN_IF_ERROR(
        CheckShape(layer.gate_proj, {intermediate, hidden}, prefix + "gate_proj"));
    REFLECT_RETURN_IF_ERROR(CheckShape(layer.up_proj, {intermediate, hidden}, prefix + "up_proj"));
    REFLECT_RETURN_IF_ERROR(
        CheckShape(layer.down_proj, {hidden, intermediate}, prefix + "down_proj"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CpuModelWeights> PrepareCpuModelWeights(const ShardedModel& model,
                                                       ThreadPool& pool) {
  const ModelConfig& config = model.config;
  const LlamaWeights& weights = model.weights;
  const int64_t hidden = config.hidden_size;
  CpuModelWeights packed_model;
  if (model.shard.first_stage) packed_model.embedding = weights.embed_tokens;
  packed_model.final_norm = ToFloats(weights.norm);
  packed_model.layers.reserve(weights.layers.size());
  for (const LlamaLayerWeights& layer : weights.layers) {
    CpuLayerWeights& packed = packed_model.layers.emplace_back();
    packed.input_norm = ToFloats(layer.input_layernorm);
    packed.post_attention_norm = ToFloats(layer.post_attention_layernorm);
    const TensorView qkv_parts[] = {layer.q_proj, layer.k_proj, layer.v_proj};
    REFLECT_ASSIGN_OR_RETURN(packed.qkv, PackedMatrix::PackRows(qkv_parts, hidden, pool));
    REFLECT_ASSIGN_OR_RETURN(
        packed.output, PackedMatrix::PackRows(std::span<const TensorView>(&layer.o_proj, 1),
                                              config.num_attention_heads * config.head_dim, pool));
    REFLECT_ASSIGN_OR_RETURN(
        packed.gate_up, PackedMatrix::PackGateUp(layer.gate_proj, layer.up_proj, hidden, pool));
    REFLECT_ASSIGN_OR_RETURN(
        packed.down, PackedMatrix::PackRows(std::span<const TensorView>(&layer.down_proj, 1),
                                            config.intermediate_size, pool));
  }
  if (model.shard.last_stage) {
    REFLECT_ASSIGN_OR_RETURN(
        packed_model.lm_head,
        PackedMatrix::PackRows(std::span<const TensorView>(&weights.lm_head, 1), hidden, pool));
  }
  return packed_model;
}

size_t CpuModelWeights::PackedBytes() const {
  size_t bytes = lm_head.bytes();
  for (const CpuLayerWeights& layer : layers) {
    bytes += layer.qkv.bytes() + layer.output.bytes() + layer.gate_up.bytes() + layer.down.bytes();
  }
  return bytes;
}

void EmbeddingRow(const TensorView& embedding, int64_t token, float* output) {
  const int64_t hidden = embedding.shape[1];
  const std::byte* row = embedding.data + token * hidden * DTypeSize(embedding.dtype);
  switch (embedding.dtype) {
    case DType::kF32:
      std::memcpy(output, row, hidden * sizeof(float));
      return;
    case DType::kF16:
    case DType::kBF16:
      for (int64_t index = 0; index < hidden; ++index) {
        uint16_t bits;
        std::memcpy(&bits, row + index * 2, 2);
        output[index] = embedding.dtype == DType::kF16 ? F16ToF32(bits) : Bf16ToF32(bits);
      }
      return;
  }
}

}  // namespace reflect::cpu
