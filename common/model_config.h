// The architecture of a Llama-3.x checkpoint, read from a Hugging Face model directory.
//
// LoadModelConfig reads `config.json` (required) and `generation_config.json` (optional) and
// validates them: every error names the file, the field, what was expected and what was found.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace reflect {

// rope_scaling with rope_type "llama3" (Llama 3.1): long-context frequency scaling.
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless config.json says otherwise
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  std::optional<Llama3RopeScaling> rope_scaling;  // absent: plain RoPE
  bool tie_word_embeddings = false;
  std::string torch_dtype;  // "bfloat16", "float16", "float32" or empty
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config.json and generation_config.json, merged
};

// Sampling defaults a checkpoint recommends (generation_config.json); all optional.
struct GenerationDefaults {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;
};

struct ModelDirectoryConfig {
  ModelConfig model;
  GenerationDefaults generation;
};

absl::StatusOr<ModelDirectoryConfig> LoadModelConfig(const std::filesystem::path& model_dir);

// The name a model is served under by default: the directory's last component ("models/tiny/"
// → "tiny").
std::string DefaultServedModelName(const std::filesystem::path& model_dir);

// Parses config.json text; `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);

}  // namespace reflect
