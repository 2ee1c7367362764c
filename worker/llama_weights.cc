#include "worker/llama_weights.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

absl::StatusOr<TensorView> GetTensor(const Checkpoint& checkpoint, const std::string& name,
                                     std::vector<int64_t> shape) {
  return checkpoint.Get(name, shape);
}

absl::StatusOr<LlamaLayerWeights> LoadLayer(const Checkpoint& checkpoint, const ModelConfig& config,
                                            int64_t layer) {
  const int64_t hidden = config.hidden_size;
  const int64_t query_width = config.num_attention_heads * config.head_dim;
  const int64_t key_value_width = config.num_key_value_heads * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  LlamaLayerWeights weights;
  REFLECT_ASSIGN_OR_RETURN(weights.input_layernorm,
                           GetTensor(checkpoint, prefix + "input_layernorm.weight", {hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.q_proj, GetTensor(checkpoint, prefix + "self_attn.q_proj.weight",
                                                     {query_width, hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.k_proj, GetTensor(checkpoint, prefix + "self_attn.k_proj.weight",
                                                     {key_value_width, hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.v_proj, GetTensor(checkpoint, prefix + "self_attn.v_proj.weight",
                                                     {key_value_width, hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.o_proj, GetTensor(checkpoint, prefix + "self_attn.o_proj.weight",
                                                     {hidden, query_width}));
  REFLECT_ASSIGN_OR_RETURN(
      weights.post_attention_layernorm,
      GetTensor(checkpoint, prefix + "post_attention_layernorm.weight", {hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.gate_proj, GetTensor(checkpoint, prefix + "mlp.gate_proj.weight",
                                                        {intermediate, hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.up_proj, GetTensor(checkpoint, prefix + "mlp.up_proj.weight",
                                                      {intermediate, hidden}));
  REFLECT_ASSIGN_OR_RETURN(weights.down_proj, GetTensor(checkpoint, prefix + "mlp.down_proj.weight",
                                                        {hidden, intermediate}));
  return weights;
}

}  // namespace

absl::StatusOr<LlamaWeights> LoadLlamaWeights(const Checkpoint& checkpoint,
                                              const ModelConfig& config) {
  LlamaWeights weights;
  const std::vector<int64_t> vocab_by_hidden = {config.vocab_size, config.hidden_size};
  REFLECT_ASSIGN_OR_RETURN(weights.embed_tokens,
                           GetTensor(checkpoint, "model.embed_tokens.weight", vocab_by_hidden));
  weights.layers.reserve(config.num_hidden_layers);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    REFLECT_ASSIGN_OR_RETURN(LlamaLayerWeights layer_weights, LoadLayer(checkpoint, config, layer));
    weights.layers.push_back(std::move(layer_weights));
  }
  REFLECT_ASSIGN_OR_RETURN(weights.norm,
                           GetTensor(checkpoint, "model.norm.weight", {config.hidden_size}));
  // Tied checkpoints usually omit lm_head.weight; when one ships it anyway, transformers still
  // uses the embedding, and so do we.
  if (config.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens;
  } else if (checkpoint.Contains("lm_head.weight")) {
    REFLECT_ASSIGN_OR_RETURN(weights.lm_head,
                             GetTensor(checkpoint, "lm_head.weight", vocab_by_hidden));
  } else {
    return absl::NotFoundError(
        "tensor 'lm_head.weight' not found, and config.json has tie_word_embeddings false "
        "(an untied model needs its own LM head)");
  }
  return weights;
}

}  // namespace reflect
