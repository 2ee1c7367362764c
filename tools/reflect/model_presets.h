// The model shapes `reflect mkmodel` knows by name, and how a ModelConfig is written as a
// Hugging Face config.json / generation_config.json (the Llama 3.1 layout).
//
//   tiny  4 layers, hidden 256, 8 heads / 2 KV heads, head_dim 32, intermediate 768, untied
//   1b    Llama-3.2-1B: 16 layers, hidden 2048, 32 / 8 heads, head_dim 64, 8192, tied
//   8b    Llama-3.1-8B: 32 layers, hidden 4096, 32 / 8 heads, 14336, untied
//   70b   Llama-3.1-70B: 80 layers, hidden 8192, 64 / 8 heads, 28672, untied
//
// All use the full Llama 3 vocabulary (128256), bos 128000, eos {128001, 128008, 128009} and
// llama3 RoPE scaling (factor 8, or 32 for 1b).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace reflect::cli {

// The shape of preset `name` (tiny, 1b, 8b, 70b); INVALID_ARGUMENT for any other name.
absl::StatusOr<ModelConfig> ModelPresetConfig(std::string_view name);

// config.json text for `config`: architectures ["LlamaForCausalLM"], model_type "llama", and
// every field ParseModelConfig reads (so the two round-trip).
std::string ModelConfigJson(const ModelConfig& config);

// generation_config.json text: the model's bos/eos ids and Llama 3.1's sampling defaults
// (temperature 0.6, top_p 0.9).
std::string GenerationConfigJson(const ModelConfig& config);

}  // namespace reflect::cli
