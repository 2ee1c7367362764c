// The tensors of a Llama model, by role, as views into a Checkpoint (PyTorch layouts:
// Linear weights are [out_features, in_features]).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/checkpoint.h"

namespace reflect {

struct LlamaLayerWeights {
  TensorView input_layernorm;           // [hidden]
  TensorView q_proj;                    // [heads * head_dim, hidden]
  TensorView k_proj;                    // [kv_heads * head_dim, hidden]
  TensorView v_proj;                    // [kv_heads * head_dim, hidden]
  TensorView o_proj;                    // [hidden, heads * head_dim]
  TensorView post_attention_layernorm;  // [hidden]
  TensorView gate_proj;                 // [intermediate, hidden]
  TensorView up_proj;                   // [intermediate, hidden]
  TensorView down_proj;                 // [hidden, intermediate]
};

struct LlamaWeights {
  TensorView embed_tokens;  // [vocab, hidden]
  std::vector<LlamaLayerWeights> layers;
  TensorView norm;     // [hidden]
  TensorView lm_head;  // [vocab, hidden]; the embedding when tie_word_embeddings
};

// Finds every tensor under its Hugging Face name (model.layers.N.self_attn.q_proj.weight, ...)
// with the shape `config` implies; errors name the missing or misshapen tensor.
absl::StatusOr<LlamaWeights> LoadLlamaWeights(const Checkpoint& checkpoint,
                                              const ModelConfig& config);

}  // namespace reflect
