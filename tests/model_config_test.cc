#include "common/model_config.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"

namespace reflect {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Llama-3.1-8B-Instruct's config.json, as published.
constexpr char kLlama31Config[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "use_cache": true,
  "vocab_size": 128256
})";

nlohmann::json BaseConfig() { return nlohmann::json::parse(kLlama31Config); }

absl::StatusOr<ModelConfig> Parse(const nlohmann::json& config) {
  return ParseModelConfig(config.dump(), "config.json");
}

class ModelDirectory {
 public:
  ModelDirectory() { path_ = testing::MakeTestDirectory("model_config_test"); }
  ~ModelDirectory() { std::filesystem::remove_all(path_); }

  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

TEST(ModelConfigTest, ParsesLlama31Config) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kLlama31Config, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 4096);
  EXPECT_EQ(config->intermediate_size, 14336);
  EXPECT_EQ(config->num_hidden_layers, 32);
  EXPECT_EQ(config->num_attention_heads, 32);
  EXPECT_EQ(config->num_key_value_heads, 8);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_EQ(config->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(config->rope_theta, 500000.0);
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(config->rope_scaling->factor, 8.0);
  EXPECT_DOUBLE_EQ(config->rope_scaling->low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(config->rope_scaling->high_freq_factor, 4.0);
  EXPECT_EQ(config->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->torch_dtype, "bfloat16");
  EXPECT_EQ(config->bos_token_id, 128000);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, OptionalFieldsAndVariants) {
  nlohmann::json json = BaseConfig();
  json.erase("num_key_value_heads");
  json["head_dim"] = 64;  // not hidden / heads: Llama-3.2-style explicit head_dim wins
  json["rope_scaling"] = nullptr;
  json["eos_token_id"] = 128001;
  json["tie_word_embeddings"] = true;
  absl::StatusOr<ModelConfig> config = Parse(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_key_value_heads, 32);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_FALSE(config->rope_scaling.has_value());
  EXPECT_THAT(config->eos_token_ids, ElementsAre(128001));
  EXPECT_TRUE(config->tie_word_embeddings);
}

TEST(ModelConfigTest, LegacyRopeTypeSpellingAndTransformers5RopeParameters) {
  nlohmann::json legacy = BaseConfig();
  legacy["rope_scaling"].erase("rope_type");
  legacy["rope_scaling"]["type"] = "llama3";
  absl::StatusOr<ModelConfig> config = Parse(legacy);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->rope_scaling.has_value());

  nlohmann::json modern = BaseConfig();
  modern["rope_parameters"] = modern["rope_scaling"];
  modern["rope_parameters"]["rope_theta"] = 250000.0;
  modern.erase("rope_scaling");
  modern.erase("rope_theta");
  config = Parse(modern);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_DOUBLE_EQ(config->rope_theta, 250000.0);
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(config->rope_scaling->factor, 8.0);
}

TEST(ModelConfigTest, LoadsDirectoryAndMergesGenerationConfig) {
  ModelDirectory directory;
  directory.Write("config.json", kLlama31Config);
  directory.Write("generation_config.json",
                  R"({"bos_token_id": 128000, "eos_token_id": [128009, 128001, 128256],
                      "do_sample": true, "temperature": 0.6, "top_p": 0.9, "top_k": 50})");
  nlohmann::json config = BaseConfig();
  config["vocab_size"] = 128257;  // so 128256 is a valid id
  directory.Write("config.json", config.dump());
  absl::StatusOr<ModelDirectoryConfig> loaded = LoadModelConfig(directory.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->model.eos_token_ids, ElementsAre(128001, 128008, 128009, 128256));
  EXPECT_EQ(loaded->generation.temperature, 0.6);
  EXPECT_EQ(loaded->generation.top_p, 0.9);
  EXPECT_EQ(loaded->generation.top_k, 50);
}

TEST(ModelConfigTest, GenerationConfigIsOptional) {
  ModelDirectory directory;
  directory.Write("config.json", kLlama31Config);
  absl::StatusOr<ModelDirectoryConfig> loaded = LoadModelConfig(directory.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->generation.temperature.has_value());
  EXPECT_THAT(loaded->model.eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST(ModelConfigTest, MissingConfigFileNamesIt) {
  ModelDirectory directory;
  absl::StatusOr<ModelDirectoryConfig> loaded = LoadModelConfig(directory.path());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json"));
}

TEST(ModelConfigTest, MalformedJsonGivesPosition) {
  ModelDirectory directory;
  directory.Write("config.json", R"({"hidden_size": 4096,, })");
  absl::StatusOr<ModelDirectoryConfig> loaded = LoadModelConfig(directory.path());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json: malformed JSON at byte 22"));
}

TEST(ModelConfigTest, MalformedGenerationConfigNamesIt) {
  ModelDirectory directory;
  directory.Write("config.json", kLlama31Config);
  directory.Write("generation_config.json", R"({"temperature": "hot"})");
  absl::StatusOr<ModelDirectoryConfig> loaded = LoadModelConfig(directory.path());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("generation_config.json: field 'temperature': expected a number, found "
                        "string \"hot\""));
}

TEST(ModelConfigTest, TopLevelMustBeAnObject) {
  EXPECT_THAT(ParseModelConfig("[1, 2]", "config.json").status().message(),
              HasSubstr("expected a JSON object at the top level, found array"));
}

TEST(ModelConfigTest, UnsupportedArchitecture) {
  nlohmann::json json = BaseConfig();
  json["model_type"] = "mistral";
  absl::Status status = Parse(json).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("unsupported architecture: model_type \"mistral\""));

  json = BaseConfig();
  json["architectures"] = {"LlamaForSequenceClassification"};
  status = Parse(json).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("LlamaForSequenceClassification"));

  json = BaseConfig();
  json.erase("model_type");
  EXPECT_THAT(Parse(json).status().message(), HasSubstr("missing required field 'model_type'"));
}

TEST(ModelConfigTest, WrongFieldType) {
  nlohmann::json json = BaseConfig();
  json["hidden_size"] = "4096";
  absl::Status status = Parse(json).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("config.json: field 'hidden_size': expected an "
                                          "integer, found string \"4096\""));

  json = BaseConfig();
  json["tie_word_embeddings"] = 1;
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("field 'tie_word_embeddings': expected true or false, found number 1"));

  json = BaseConfig();
  json["eos_token_id"] = {128001, "x"};
  EXPECT_THAT(Parse(json).status().message(), HasSubstr("field 'eos_token_id': expected a token"));
}

TEST(ModelConfigTest, MissingRequiredField) {
  nlohmann::json json = BaseConfig();
  json.erase("vocab_size");
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("missing required field 'vocab_size' (an integer)"));
}

TEST(ModelConfigTest, NonPositiveSizes) {
  for (const char* field :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim"}) {
    nlohmann::json json = BaseConfig();
    json[field] = 0;
    absl::Status status = Parse(json).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(status.message(), HasSubstr(std::string("field '") + field +
                                            "': expected a positive integer, found number 0"));
  }
  nlohmann::json json = BaseConfig();
  json["rms_norm_eps"] = -1e-5;
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("field 'rms_norm_eps': expected a positive number"));
}

TEST(ModelConfigTest, HeadsMustDivide) {
  nlohmann::json json = BaseConfig();
  json["num_key_value_heads"] = 5;
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("num_attention_heads (32) must be a multiple of num_key_value_heads (5)"));

  json = BaseConfig();
  json["hidden_size"] = 4100;
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("hidden_size (4100) must be a multiple of num_attention_heads (32)"));

  json = BaseConfig();
  json["head_dim"] = 33;
  EXPECT_THAT(Parse(json).status().message(), HasSubstr("field 'head_dim': expected an even"));
}

TEST(ModelConfigTest, UnsupportedRopeScaling) {
  nlohmann::json json = BaseConfig();
  json["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  absl::Status status = Parse(json).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("unsupported rope_type \"yarn\""));

  json = BaseConfig();
  json["rope_scaling"].erase("low_freq_factor");
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("config.json: rope_scaling: missing required field 'low_freq_factor'"));

  json = BaseConfig();
  json["rope_scaling"] = {{"factor", 8.0}};
  EXPECT_THAT(Parse(json).status().message(), HasSubstr("has no 'rope_type'"));
}

TEST(ModelConfigTest, TokenIdsMustBeInVocabulary) {
  nlohmann::json json = BaseConfig();
  json["bos_token_id"] = 200000;
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("field 'bos_token_id': token id 200000 is outside the vocabulary"));
}

TEST(ModelConfigTest, UnknownTorchDtype) {
  nlohmann::json json = BaseConfig();
  json["torch_dtype"] = "float8";
  EXPECT_THAT(Parse(json).status().message(),
              HasSubstr("field 'torch_dtype': expected \"bfloat16\", \"float16\" or \"float32\", "
                        "found string \"float8\""));
}

}  // namespace
}  // namespace reflect
