// Runs the real `reflect generate` binary against the generated tiny model, and checks it against
// the Generator run in-process over the CPU backend.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/generator.h"

namespace reflect {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

testing::ProcessResult RunGenerate(const std::vector<std::string>& arguments) {
  return testing::RunReflect("generate", arguments);
}

std::string TinyModel() { return testing::TestModelPath("tiny").string(); }

std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::vector<int32_t> Ids(const nlohmann::json& line) {
  return line.at("ids").get<std::vector<int32_t>>();
}

TEST(GenerateCliTest, JsonLineHasIdsTextAndFinishReason) {
  const testing::ProcessResult output =
      RunGenerate({"--model", TinyModel(), "--prompt_ids", "128000,9906,1917", "--max_tokens", "6",
                   "--ignore_eos", "--json"});
  ASSERT_EQ(output.exit_code, 0) << output.standard_error;
  const std::vector<nlohmann::json> lines = JsonLines(output.standard_output);
  ASSERT_THAT(lines, SizeIs(1));
  EXPECT_THAT(Ids(lines[0]), SizeIs(6));
  EXPECT_TRUE(lines[0].at("text").is_string());
  EXPECT_EQ(lines[0].at("finish_reason"), "length");
}

TEST(GenerateCliTest, GreedyOutputEqualsTheInProcessGenerator) {
  const std::vector<int32_t> prompt = {128000, 791, 6460, 374, 6437};
  const testing::ProcessResult output =
      RunGenerate({"--model", TinyModel(), "--prompt_ids", "128000,791,6460,374,6437",
                   "--max_tokens", "10", "--json"});
  ASSERT_EQ(output.exit_code, 0) << output.standard_error;
  const std::vector<nlohmann::json> lines = JsonLines(output.standard_output);
  ASSERT_THAT(lines, SizeIs(1));

  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(TinyModel());
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCpuBackend(TinyModel(), {});
  ASSERT_TRUE(backend.ok()) << backend.status();
  GenerationRequest request;
  request.prompt_ids = prompt;
  request.params.max_tokens = 10;
  request.eos_token_ids = config->model.eos_token_ids;
  Generator generator(**backend, {});
  absl::StatusOr<std::vector<GenerationResult>> results = generator.Generate({request});
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(Ids(lines[0]), (*results)[0].generated_ids);
}

TEST(GenerateCliTest, SeedMakesSamplingReproducible) {
  auto sample = [](const std::string& seed) {
    const testing::ProcessResult output =
        RunGenerate({"--model", TinyModel(), "--prompt", "The sky is", "--temperature", "1.0",
                     "--seed", seed, "--max_tokens", "12", "--ignore_eos", "--json"});
    EXPECT_EQ(output.exit_code, 0) << output.standard_error;
    const std::vector<nlohmann::json> lines = JsonLines(output.standard_output);
    return lines.size() == 1 ? Ids(lines[0]) : std::vector<int32_t>{};
  };
  const std::vector<int32_t> first = sample("7");
  EXPECT_THAT(first, SizeIs(12));
  EXPECT_EQ(sample("7"), first);
  EXPECT_NE(sample("8"), first);
}

TEST(GenerateCliTest, PromptsFileRunsOneBatchWithTheSameOutputsAsSinglePrompts) {
  const std::filesystem::path prompts =
      testing::MakeTestDirectory("generate-cli") / "prompts.jsonl";
  const std::vector<std::string> texts = {"Hello", "Why is the sky blue?", "1, 2, 3,"};
  {
    std::ofstream file(prompts);
    for (const std::string& text : texts) file << nlohmann::json(text).dump() << "\n";
  }
  const testing::ProcessResult batch =
      RunGenerate({"--model", TinyModel(), "--prompts_file", prompts.string(), "--chat",
                   "--temperature", "0.8", "--seed", "3", "--max_tokens", "8", "--json"});
  ASSERT_EQ(batch.exit_code, 0) << batch.standard_error;
  const std::vector<nlohmann::json> lines = JsonLines(batch.standard_output);
  ASSERT_THAT(lines, SizeIs(texts.size()));
  for (size_t index = 0; index < texts.size(); ++index) {
    const testing::ProcessResult single =
        RunGenerate({"--model", TinyModel(), "--prompt", texts[index], "--chat", "--temperature",
                     "0.8", "--seed", "3", "--max_tokens", "8", "--json"});
    ASSERT_EQ(single.exit_code, 0) << single.standard_error;
    const std::vector<nlohmann::json> single_lines = JsonLines(single.standard_output);
    ASSERT_THAT(single_lines, SizeIs(1));
    EXPECT_EQ(single_lines[0], lines[index]) << "prompt " << index;
  }
}

TEST(GenerateCliTest, TextModeStreamsTextAndReportsTimings) {
  const testing::ProcessResult output = RunGenerate(
      {"--model", TinyModel(), "--prompt", "Hello", "--chat", "--reflection", "--max_tokens", "5"});
  ASSERT_EQ(output.exit_code, 0) << output.standard_error;
  EXPECT_THAT(output.standard_output, ::testing::EndsWith("\n"));
  EXPECT_THAT(output.standard_error, HasSubstr("first token"));
}

TEST(GenerateCliTest, BadInputExitsWithCodeTwo) {
  const std::string model = TinyModel();
  const std::vector<std::vector<std::string>> cases = {
      {"--model", "/nonexistent/model", "--prompt", "x"},
      {"--model", model},
      {"--model", model, "--prompt", "x", "--prompt_ids", "1"},
      {"--model", model, "--prompt_ids", "1,abc"},
      {"--model", model, "--prompt_ids", "1,,2"},
      {"--model", model, "--prompt_ids", "-3"},
      {"--model", model, "--prompt_ids", "128256"},
      {"--model", model, "--prompt", "x", "--temperature", "-0.5"},
      {"--model", model, "--prompt", "x", "--top_p", "0"},
      {"--model", model, "--prompt", "x", "--top_p", "1.5"},
      {"--model", model, "--prompt", "x", "--max_tokens", "0"},
      {"--model", model, "--prompt_ids", "1", "--chat"},
      {"--model", model, "--prompt", "x", "--reflection"},
      {"--model", model, "--prompts_file", "/nonexistent/prompts.jsonl"},
  };
  for (const std::vector<std::string>& arguments : cases) {
    const testing::ProcessResult output = RunGenerate(arguments);
    EXPECT_EQ(output.exit_code, 2) << absl::StrJoin(arguments, " ");
    EXPECT_THAT(output.standard_error, HasSubstr("reflect generate: "))
        << absl::StrJoin(arguments, " ");
    EXPECT_EQ(output.standard_output, "") << absl::StrJoin(arguments, " ");
  }
}

// The CPU backend is batch invariant, so with seeded sampling a request's tokens do not depend
// on its neighbours or on how its prompt is chunked.
TEST(GenerateCliTest, RealBackendGivesTheSameTokensAloneBatchedAndChunked) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateCpuBackend(TinyModel(), {});
  ASSERT_TRUE(backend.ok()) << backend.status();
  std::vector<GenerationRequest> requests;
  for (int index = 0; index < 3; ++index) {
    GenerationRequest& request = requests.emplace_back();
    for (int token = 0; token < 5 + 11 * index; ++token) {
      request.prompt_ids.push_back(1000 + 37 * token + index);
    }
    request.params.max_tokens = 6;
    request.params.temperature = index == 0 ? 0.0 : 0.9;
    request.params.seed = static_cast<uint64_t>(index);
    request.params.ignore_eos = true;
  }
  GeneratorOptions chunked;
  chunked.max_num_batched_tokens = 7;
  Generator batched_generator(**backend, {});
  Generator chunked_generator(**backend, chunked);
  absl::StatusOr<std::vector<GenerationResult>> batched = batched_generator.Generate(requests);
  absl::StatusOr<std::vector<GenerationResult>> chunked_results =
      chunked_generator.Generate(requests);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_TRUE(chunked_results.ok()) << chunked_results.status();
  for (size_t index = 0; index < requests.size(); ++index) {
    absl::StatusOr<std::vector<GenerationResult>> alone =
        batched_generator.Generate({requests[index]});
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0].generated_ids, (*batched)[index].generated_ids) << "request " << index;
    EXPECT_EQ((*chunked_results)[index].generated_ids, (*batched)[index].generated_ids)
        << "request " << index;
  }
}

}  // namespace
}  // namespace reflect
