// `reflect mkmodel`, run as users run it: the binary of this build tree, real files.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_split.h"
#include "common/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"
#include "worker/checkpoint.h"
#include "worker/llama_weights.h"

namespace reflect {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// `arguments` are separated by single spaces (the tests' paths have none).
CommandResult RunMkmodel(const std::string& arguments) {
  const std::vector<std::string> split = absl::StrSplit(arguments, ' ', absl::SkipEmpty());
  const testing::ProcessResult process = testing::RunReflect("mkmodel", split);
  return {process.exit_code, process.standard_output + process.standard_error};
}

std::string ReadFile(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(stream), {});
}

class MkmodelTest : public ::testing::Test {
 protected:
  void SetUp() override { directory_ = testing::MakeTestDirectory("mkmodel_test"); }
  void TearDown() override { fs::remove_all(directory_); }

  std::string Out(const std::string& name) const { return "--out " + (directory_ / name).string(); }

  fs::path directory_;
};

// A few hundred KB: small enough to write many times per test.
constexpr char kSmallShape[] =
    "--layers 2 --hidden 64 --heads 4 --kv_heads 2 --intermediate 96 --vocab 512";

TEST_F(MkmodelTest, TinyPresetIsACompleteLoadableModelDirectory) {
  CommandResult result = RunMkmodel("--preset tiny " + Out("tiny"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const fs::path model = directory_ / "tiny";
  for (const char* file : {"config.json", "generation_config.json", "model.safetensors",
                           "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(model / file)) << file;
  }
  EXPECT_EQ(ReadFile(model / "tokenizer.json"),
            ReadFile(testing::TokenizerDirectory() / "tokenizer.json"));

  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(model);
  ASSERT_TRUE(config.ok()) << config.status();
  const ModelConfig& shape = config->model;
  EXPECT_EQ(shape.num_hidden_layers, 4);
  EXPECT_EQ(shape.hidden_size, 256);
  EXPECT_EQ(shape.num_attention_heads, 8);
  EXPECT_EQ(shape.num_key_value_heads, 2);
  EXPECT_EQ(shape.head_dim, 32);
  EXPECT_EQ(shape.intermediate_size, 768);
  EXPECT_EQ(shape.vocab_size, 128256);
  EXPECT_EQ(shape.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(shape.rope_theta, 500000.0);
  ASSERT_TRUE(shape.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(shape.rope_scaling->factor, 8.0);
  EXPECT_EQ(shape.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_FALSE(shape.tie_word_embeddings);
  EXPECT_EQ(shape.torch_dtype, "bfloat16");
  EXPECT_EQ(shape.bos_token_id, 128000);
  EXPECT_THAT(shape.eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(config->generation.temperature, 0.6);

  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(model);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<LlamaWeights> weights = LoadLlamaWeights(**checkpoint, shape);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->embed_tokens.dtype, DType::kBF16);
  EXPECT_NE(weights->lm_head.data, weights->embed_tokens.data);
}

TEST_F(MkmodelTest, WeightsAreDeterministicAndPinned) {
  ASSERT_EQ(RunMkmodel(std::string(kSmallShape) + " --dtype f32 " + Out("a")).exit_code, 0);
  ASSERT_EQ(RunMkmodel(std::string(kSmallShape) + " --dtype f32 " + Out("b")).exit_code, 0);
  ASSERT_EQ(RunMkmodel(std::string(kSmallShape) + " --dtype f32 --seed 7 " + Out("c")).exit_code,
            0);
  const std::string a = ReadFile(directory_ / "a" / "model.safetensors");
  EXPECT_EQ(a, ReadFile(directory_ / "b" / "model.safetensors"));
  EXPECT_NE(a, ReadFile(directory_ / "c" / "model.safetensors"));

  // Pinned values of the documented generator (docs/models.md): if these change, every golden
  // fixture made from mkmodel weights is stale.
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_ / "a");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<TensorView> embedding =
      (*checkpoint)->Get("model.embed_tokens.weight", std::vector<int64_t>{512, 64});
  absl::StatusOr<TensorView> norm =
      (*checkpoint)->Get("model.norm.weight", std::vector<int64_t>{64});
  ASSERT_TRUE(embedding.ok() && norm.ok());
  EXPECT_EQ(embedding->At(0), -0x1.7372b2p+0f);
  EXPECT_EQ(embedding->At(12345), -0x1.adc69ep+0f);
  EXPECT_EQ(norm->At(3), 0x1.f4a9a2p-1f);
}

TEST_F(MkmodelTest, CustomShapeFlags) {
  CommandResult result = RunMkmodel(
      std::string(kSmallShape) +
      " --head_dim 32 --rope_theta 10000 --rope_scaling_factor 4 --rope_original_max_position "
      "2048 --max_position 4096 --tie_embeddings=true --dtype f32 " +
      Out("m"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(directory_ / "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.head_dim, 32);
  EXPECT_EQ(config->model.num_key_value_heads, 2);
  EXPECT_EQ(config->model.vocab_size, 512);
  EXPECT_DOUBLE_EQ(config->model.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(config->model.rope_scaling->factor, 4.0);
  EXPECT_EQ(config->model.rope_scaling->original_max_position_embeddings, 2048);
  EXPECT_EQ(config->model.max_position_embeddings, 4096);
  EXPECT_TRUE(config->model.tie_word_embeddings);
  EXPECT_EQ(config->model.torch_dtype, "float32");
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_ / "m");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE((*checkpoint)->Contains("lm_head.weight"));
  EXPECT_TRUE(LoadLlamaWeights(**checkpoint, config->model).ok());

  ASSERT_EQ(RunMkmodel(std::string(kSmallShape) + " --rope_scaling_factor 0 " + Out("m")).exit_code,
            0);
  const nlohmann::json written = nlohmann::json::parse(ReadFile(directory_ / "m" / "config.json"));
  EXPECT_TRUE(written["rope_scaling"].is_null());
}

TEST_F(MkmodelTest, ShardsAboveShardSizeAndReplacesAnOlderCheckpoint) {
  ASSERT_EQ(RunMkmodel(std::string(kSmallShape) + " --dtype f32 " + Out("m")).exit_code, 0);
  // 512 * 64 * 4 bytes = 128 KiB per embedding matrix; ~0.6 MiB in all.
  CommandResult result = RunMkmodel(std::string(kSmallShape) +
                                    " --vocab 4096 --dtype f32 --shard_size_mb 1 " + Out("m"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(fs::exists(directory_ / "m" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(directory_ / "m" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(directory_ / "m" / "model-00003-of-00003.safetensors"));
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(directory_ / "m");
  ASSERT_TRUE(config.ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(directory_ / "m");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE(LoadLlamaWeights(**checkpoint, config->model).ok());
}

TEST_F(MkmodelTest, PartialSeventyBillionPreset) {
  CommandResult result =
      RunMkmodel("--preset 70b --layers 1 --intermediate 64 --vocab 256 " + Out("m"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(directory_ / "m");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->model.hidden_size, 8192);
  EXPECT_EQ(config->model.num_attention_heads, 64);
  EXPECT_EQ(config->model.num_key_value_heads, 8);
  EXPECT_EQ(config->model.head_dim, 128);
  EXPECT_EQ(config->model.num_hidden_layers, 1);
}

TEST_F(MkmodelTest, BadFlagsAreClearErrors) {
  CommandResult result = RunMkmodel("--preset huge " + Out("m"));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.output, HasSubstr("unknown preset \"huge\""));

  result = RunMkmodel("--preset tiny --heads 6 " + Out("m"));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.output, HasSubstr("--hidden 256 is not a multiple of --heads 6"));

  result = RunMkmodel("--preset tiny --kv_heads 3 " + Out("m"));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.output, HasSubstr("must be a multiple of num_key_value_heads (3)"));

  result = RunMkmodel("--dtype f8 " + Out("m"));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.output, HasSubstr("--dtype: expected bf16, f16 or f32"));

  result = RunMkmodel("--preset tiny");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.output, HasSubstr("--out is required"));
  EXPECT_FALSE(fs::exists(directory_ / "m"));
}

}  // namespace
}  // namespace reflect
