#include "tools/reflect/model_presets.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace reflect::cli {
namespace {

constexpr int32_t kLlama3BosTokenId = 128000;
// <|end_of_text|>, <|eom_id|>, <|eot_id|>: what Llama 3.1 Instruct stops on.
const std::vector<int32_t> kLlama3EosTokenIds = {128001, 128008, 128009};

ModelConfig Llama3Base() {
  ModelConfig config;
  config.vocab_size = 128256;
  config.max_position_embeddings = 131072;
  config.rms_norm_eps = 1e-5;
  config.rope_theta = 500000.0;
  config.rope_scaling = Llama3RopeScaling{.factor = 8.0,
                                          .low_freq_factor = 1.0,
                                          .high_freq_factor = 4.0,
                                          .original_max_position_embeddings = 8192};
  config.torch_dtype = "bfloat16";
  config.bos_token_id = kLlama3BosTokenId;
  config.eos_token_ids = kLlama3EosTokenIds;
  return config;
}

ModelConfig WithShape(ModelConfig config, int64_t layers, int64_t hidden, int64_t heads,
                      int64_t key_value_heads, int64_t head_dim, int64_t intermediate) {
  config.num_hidden_layers = layers;
  config.hidden_size = hidden;
  config.num_attention_heads = heads;
  config.num_key_value_heads = key_value_heads;
  config.head_dim = head_dim;
  config.intermediate_size = intermediate;
  return config;
}

}  // namespace

absl::StatusOr<ModelConfig> ModelPresetConfig(std::string_view name) {
  if (name == "tiny") return WithShape(Llama3Base(), 4, 256, 8, 2, 32, 768);
  if (name == "1b") {
    ModelConfig config = WithShape(Llama3Base(), 16, 2048, 32, 8, 64, 8192);
    config.rope_scaling->factor = 32.0;
    config.tie_word_embeddings = true;
    return config;
  }
  if (name == "8b") return WithShape(Llama3Base(), 32, 4096, 32, 8, 128, 14336);
  if (name == "70b") return WithShape(Llama3Base(), 80, 8192, 64, 8, 128, 28672);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", std::string(name), "\" (known: tiny, 1b, 8b, 70b)"));
}

std::string ModelConfigJson(const ModelConfig& config) {
  nlohmann::ordered_json json;
  json["architectures"] = {"LlamaForCausalLM"};
  json["model_type"] = "llama";
  json["attention_bias"] = false;
  json["mlp_bias"] = false;
  json["hidden_act"] = "silu";
  json["hidden_size"] = config.hidden_size;
  json["intermediate_size"] = config.intermediate_size;
  json["num_hidden_layers"] = config.num_hidden_layers;
  json["num_attention_heads"] = config.num_attention_heads;
  json["num_key_value_heads"] = config.num_key_value_heads;
  json["head_dim"] = config.head_dim;
  json["vocab_size"] = config.vocab_size;
  json["max_position_embeddings"] = config.max_position_embeddings;
  json["rms_norm_eps"] = config.rms_norm_eps;
  json["rope_theta"] = config.rope_theta;
  if (config.rope_scaling.has_value()) {
    json["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", config.rope_scaling->factor},
        {"low_freq_factor", config.rope_scaling->low_freq_factor},
        {"high_freq_factor", config.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", config.rope_scaling->original_max_position_embeddings},
    };
  } else {
    json["rope_scaling"] = nullptr;
  }
  json["tie_word_embeddings"] = config.tie_word_embeddings;
  json["torch_dtype"] = config.torch_dtype;
  if (config.bos_token_id.has_value()) json["bos_token_id"] = *config.bos_token_id;
  json["eos_token_id"] = config.eos_token_ids;
  json["initializer_range"] = 0.02;
  json["pretraining_tp"] = 1;
  json["use_cache"] = true;
  return json.dump(2) + "\n";
}

std::string GenerationConfigJson(const ModelConfig& config) {
  nlohmann::ordered_json json;
  if (config.bos_token_id.has_value()) json["bos_token_id"] = *config.bos_token_id;
  json["eos_token_id"] = config.eos_token_ids;
  json["do_sample"] = true;
  json["temperature"] = 0.6;
  json["top_p"] = 0.9;
  return json.dump(2) + "\n";
}

}  // namespace reflect::cli
