#include "worker/llama_weights.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/process.h"
#include "worker/safetensors_writer.h"

namespace reflect {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ModelConfig SmallConfig() {
  ModelConfig config;
  config.hidden_size = 16;
  config.intermediate_size = 24;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;  // != hidden / heads, as in models that set head_dim
  config.vocab_size = 32;
  config.max_position_embeddings = 64;
  return config;
}

// Every tensor of a Llama checkpoint with the Hugging Face names and PyTorch shapes; each
// element is its tensor's index in this list, so tests can tell views apart.
std::vector<TensorToWrite> LlamaTensors(const ModelConfig& config, bool with_lm_head) {
  const int64_t hidden = config.hidden_size;
  const int64_t query = config.num_attention_heads * config.head_dim;
  const int64_t key_value = config.num_key_value_heads * config.head_dim;
  const int64_t intermediate = config.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {config.vocab_size, hidden}}};
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    shapes.push_back({prefix + "input_layernorm.weight", {hidden}});
    shapes.push_back({prefix + "self_attn.q_proj.weight", {query, hidden}});
    shapes.push_back({prefix + "self_attn.k_proj.weight", {key_value, hidden}});
    shapes.push_back({prefix + "self_attn.v_proj.weight", {key_value, hidden}});
    shapes.push_back({prefix + "self_attn.o_proj.weight", {hidden, query}});
    shapes.push_back({prefix + "post_attention_layernorm.weight", {hidden}});
    shapes.push_back({prefix + "mlp.gate_proj.weight", {intermediate, hidden}});
    shapes.push_back({prefix + "mlp.up_proj.weight", {intermediate, hidden}});
    shapes.push_back({prefix + "mlp.down_proj.weight", {hidden, intermediate}});
  }
  shapes.push_back({"model.norm.weight", {hidden}});
  if (with_lm_head) shapes.push_back({"lm_head.weight", {config.vocab_size, hidden}});
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < shapes.size(); ++i) {
    tensors.push_back({.name = shapes[i].first,
                       .dtype = DType::kBF16,
                       .shape = shapes[i].second,
                       .fill = [i](int64_t, std::span<float> values) {
                         for (float& value : values) value = static_cast<float>(i);
                       }});
  }
  return tensors;
}

class LlamaWeightsTest : public ::testing::Test {
 protected:
  void SetUp() override { directory_ = testing::MakeTestDirectory("llama_weights_test"); }
  void TearDown() override { fs::remove_all(directory_); }

  std::unique_ptr<Checkpoint> Write(const std::vector<TensorToWrite>& tensors) {
    EXPECT_TRUE(WriteSafetensorsModel(directory_, tensors, 1 << 30).ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    return checkpoint.ok() ? std::move(*checkpoint) : nullptr;
  }

  fs::path directory_;
};

TEST_F(LlamaWeightsTest, FindsEveryTensorWithItsShape) {
  const ModelConfig config = SmallConfig();
  std::unique_ptr<Checkpoint> checkpoint = Write(LlamaTensors(config, /*with_lm_head=*/true));
  ASSERT_NE(checkpoint, nullptr);
  absl::StatusOr<LlamaWeights> weights = LoadLlamaWeights(*checkpoint, config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(weights->layers.size(), 2u);
  EXPECT_THAT(weights->embed_tokens.shape, ElementsAre(32, 16));
  EXPECT_EQ(weights->embed_tokens.At(0), 0.0f);
  const LlamaLayerWeights& layer1 = weights->layers[1];
  EXPECT_THAT(layer1.q_proj.shape, ElementsAre(32, 16));
  EXPECT_THAT(layer1.k_proj.shape, ElementsAre(16, 16));
  EXPECT_THAT(layer1.o_proj.shape, ElementsAre(16, 32));
  EXPECT_THAT(layer1.down_proj.shape, ElementsAre(16, 24));
  // Tensor indices in file order: layer 1 starts at 1 + 9.
  EXPECT_EQ(layer1.input_layernorm.At(0), 10.0f);
  EXPECT_EQ(layer1.q_proj.At(5), 11.0f);
  EXPECT_EQ(layer1.k_proj.At(5), 12.0f);
  EXPECT_EQ(layer1.v_proj.At(5), 13.0f);
  EXPECT_EQ(layer1.o_proj.At(5), 14.0f);
  EXPECT_EQ(layer1.post_attention_layernorm.At(5), 15.0f);
  EXPECT_EQ(layer1.gate_proj.At(5), 16.0f);
  EXPECT_EQ(layer1.up_proj.At(5), 17.0f);
  EXPECT_EQ(layer1.down_proj.At(5), 18.0f);
  EXPECT_EQ(weights->norm.At(0), 19.0f);
  EXPECT_EQ(weights->lm_head.At(0), 20.0f);
}

TEST_F(LlamaWeightsTest, TiedEmbeddingsServeAsLmHead) {
  ModelConfig config = SmallConfig();
  config.tie_word_embeddings = true;
  std::unique_ptr<Checkpoint> checkpoint = Write(LlamaTensors(config, /*with_lm_head=*/false));
  ASSERT_NE(checkpoint, nullptr);
  absl::StatusOr<LlamaWeights> weights = LoadLlamaWeights(*checkpoint, config);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->lm_head.data, weights->embed_tokens.data);
  EXPECT_THAT(weights->lm_head.shape, ElementsAre(32, 16));
}

TEST_F(LlamaWeightsTest, UntiedWithoutLmHeadIsAnError) {
  const ModelConfig config = SmallConfig();
  std::unique_ptr<Checkpoint> checkpoint = Write(LlamaTensors(config, /*with_lm_head=*/false));
  ASSERT_NE(checkpoint, nullptr);
  absl::Status status = LoadLlamaWeights(*checkpoint, config).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("'lm_head.weight' not found"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("tie_word_embeddings false"));
}

TEST_F(LlamaWeightsTest, ShapeFromConfigMustMatch) {
  const ModelConfig written = SmallConfig();
  std::unique_ptr<Checkpoint> checkpoint = Write(LlamaTensors(written, /*with_lm_head=*/true));
  ASSERT_NE(checkpoint, nullptr);
  ModelConfig expected = written;
  expected.num_key_value_heads = 4;  // k_proj should then be [32, 16]
  absl::Status status = LoadLlamaWeights(*checkpoint, expected).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("tensor 'model.layers.0.self_attn.k_proj.weight' in "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("has shape [16, 16], expected [32, 16]"));
}

TEST_F(LlamaWeightsTest, MissingLayerTensorIsNamed) {
  const ModelConfig config = SmallConfig();
  std::vector<TensorToWrite> tensors = LlamaTensors(config, /*with_lm_head=*/true);
  std::erase_if(tensors, [](const TensorToWrite& tensor) {
    return tensor.name == "model.layers.1.mlp.down_proj.weight";
  });
  std::unique_ptr<Checkpoint> checkpoint = Write(tensors);
  ASSERT_NE(checkpoint, nullptr);
  absl::Status status = LoadLlamaWeights(*checkpoint, config).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("tensor 'model.layers.1.mlp.down_proj.weight' not found"));
}

}  // namespace
}  // namespace reflect
