#include "tools/reflect/weight_generator.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace reflect::cli {
namespace {

uint64_t Fnv1a64(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (char character : text) {
    hash ^= static_cast<unsigned char>(character);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// Logit standard deviation the LM head aims for: peaked enough that greedy decoding is not a
// coin toss, flat enough that the softmax is not one-hot.
constexpr double kLogitScale = 3.0;
constexpr double kNormNoise = 0.05;

}  // namespace

uint64_t TensorSeed(uint64_t seed, std::string_view tensor_name) {
  return SplitMix64Mix(seed ^ Fnv1a64(tensor_name));
}

void FillUniform(uint64_t tensor_seed, double mean, double standard_deviation,
                 int64_t first_element, std::span<float> values) {
  // A uniform on [-a, a] has standard deviation a / sqrt(3).
  const double half_width = standard_deviation * std::sqrt(3.0);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint64_t index = static_cast<uint64_t>(first_element) + i;
    const uint64_t bits = SplitMix64Mix(tensor_seed + (index + 1) * kSplitMix64Gamma);
    const double uniform = static_cast<double>(bits >> 11) * 0x1.0p-53;
    // Rounding the product on its own keeps compilers from fusing it with the add into an
    // FMA on some machines only, which would change bytes.
    volatile double offset = half_width * (2.0 * uniform - 1.0);
    values[i] = static_cast<float>(mean + offset);
  }
}

std::vector<TensorRecipe> LlamaTensorRecipe(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t query_width = config.num_attention_heads * config.head_dim;
  const int64_t key_value_width = config.num_key_value_heads * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  const double input_scale = 1.0 / std::sqrt(static_cast<double>(hidden));
  // Each of the 2 * layers residual branches adds variance about 2 * (its input RMS)^2 /
  // (2 * layers) with these scales (the factor 2 makes up for attention averaging and SiLU
  // shrinking), so the layers together contribute about as much as the embedding.
  const double residual_depth = 0.5 * static_cast<double>(config.num_hidden_layers);
  const double output_scale = 1.0 / std::sqrt(static_cast<double>(query_width) * residual_depth);
  const double down_scale = 1.0 / std::sqrt(static_cast<double>(intermediate) * residual_depth);

  std::vector<TensorRecipe> recipe;
  recipe.push_back({"model.embed_tokens.weight",
                    {config.vocab_size, hidden},
                    0.0,
                    config.tie_word_embeddings ? kLogitScale * input_scale : 1.0});
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string prefix = absl::StrCat("model.layers.", layer, ".");
    recipe.push_back({prefix + "input_layernorm.weight", {hidden}, 1.0, kNormNoise});
    recipe.push_back({prefix + "self_attn.q_proj.weight", {query_width, hidden}, 0.0, input_scale});
    recipe.push_back(
        {prefix + "self_attn.k_proj.weight", {key_value_width, hidden}, 0.0, input_scale});
    recipe.push_back(
        {prefix + "self_attn.v_proj.weight", {key_value_width, hidden}, 0.0, input_scale});
    recipe.push_back(
        {prefix + "self_attn.o_proj.weight", {hidden, query_width}, 0.0, output_scale});
    recipe.push_back({prefix + "post_attention_layernorm.weight", {hidden}, 1.0, kNormNoise});
    recipe.push_back({prefix + "mlp.gate_proj.weight", {intermediate, hidden}, 0.0, input_scale});
    recipe.push_back({prefix + "mlp.up_proj.weight", {intermediate, hidden}, 0.0, input_scale});
    recipe.push_back({prefix + "mlp.down_proj.weight", {hidden, intermediate}, 0.0, down_scale});
  }
  recipe.push_back({"model.norm.weight", {hidden}, 1.0, kNormNoise});
  if (!config.tie_word_embeddings) {
    recipe.push_back(
        {"lm_head.weight", {config.vocab_size, hidden}, 0.0, kLogitScale * input_scale});
  }
  return recipe;
}

}  // namespace reflect::cli
