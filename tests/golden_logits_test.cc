// The CPU backend against Hugging Face transformers (DESIGN §10): same checkpoint, same token
// ids, logits within tolerance and identical greedy continuations.
//
// Fixtures: tests/fixtures/golden, made by tools/fixtures/make_golden_logits.py from the models
// tests/make_test_models.sh builds (docs/models.md). Prompts are prefilled in chunks that end at
// the fixture's logit positions, so interior positions also check chunked prefill.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_paths.h"
#include "worker/cpu/cpu_backend.h"

namespace reflect {
namespace {

constexpr int64_t kBlockSize = 16;
constexpr int64_t kBlocksPerSequence = 16;  // 256 positions: the longest prompt + 64 tokens fit

struct Reference {
  std::string model;
  float logit_tolerance = 0;
  bool check_greedy = false;
  std::vector<std::vector<int32_t>> greedy;  // per prompt
  std::vector<float> logits;                 // [rows, vocab]
};

struct Golden {
  int64_t vocab_size = 0;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int64_t>> logit_positions;  // per prompt, ascending, last = length - 1
  Reference reference;
};

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  return std::string(std::istreambuf_iterator<char>(stream), {});
}

absl::StatusOr<Golden> LoadGolden(const std::string& reference_name) {
  absl::StatusOr<std::string> text = ReadFile(testing::FixturePath("golden/manifest.json"));
  if (!text.ok()) return text.status();
  Golden golden;
  std::string logits_file;
  try {
    const nlohmann::json manifest = nlohmann::json::parse(*text);
    golden.vocab_size = manifest.at("vocab_size").get<int64_t>();
    golden.prompts = manifest.at("prompts").get<std::vector<std::vector<int32_t>>>();
    golden.logit_positions =
        manifest.at("logit_positions").get<std::vector<std::vector<int64_t>>>();
    for (const nlohmann::json& reference : manifest.at("references")) {
      if (reference.at("name") != reference_name) continue;
      golden.reference.model = reference.at("model").get<std::string>();
      golden.reference.logit_tolerance = reference.at("logit_tolerance").get<float>();
      golden.reference.check_greedy = reference.at("check_greedy").get<bool>();
      golden.reference.greedy = reference.at("greedy").get<std::vector<std::vector<int32_t>>>();
      logits_file = reference.at("logits_file").get<std::string>();
    }
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat("golden/manifest.json: ", error.what()));
  }
  if (logits_file.empty()) {
    return absl::NotFoundError(absl::StrCat("no reference ", reference_name, " in manifest"));
  }
  absl::StatusOr<std::string> bytes = ReadFile(testing::FixturePath("golden/" + logits_file));
  if (!bytes.ok()) return bytes.status();
  size_t rows = 0;
  for (const auto& positions : golden.logit_positions) rows += positions.size();
  if (bytes->size() != rows * golden.vocab_size * sizeof(float)) {
    return absl::DataLossError(absl::StrCat(logits_file, ": ", bytes->size(), " bytes, expected ",
                                            rows * golden.vocab_size * sizeof(float)));
  }
  golden.reference.logits.resize(rows * golden.vocab_size);
  std::memcpy(golden.reference.logits.data(), bytes->data(), bytes->size());
  return golden;
}

// Greedy decoding's choice: the largest logit, the lowest id among equals (as torch.argmax).
int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// One sequence's chunk: tokens [start, start + count) of `tokens`, with the block table
// covering exactly the positions it reaches.
ScheduledSequence Chunk(int64_t sequence_id, const std::vector<int32_t>& tokens, int64_t start,
                        int64_t count) {
  ScheduledSequence sequence;
  sequence.sequence_id = sequence_id;
  sequence.token_ids.assign(tokens.begin() + start, tokens.begin() + start + count);
  sequence.start_position = start;
  const int64_t blocks = (start + count + kBlockSize - 1) / kBlockSize;
  for (int64_t block = 0; block < blocks; ++block) {
    sequence.block_table.push_back(static_cast<int32_t>(sequence_id * kBlocksPerSequence + block));
  }
  sequence.needs_logits = true;
  return sequence;
}

class GoldenLogitsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogitsTest, MatchesTransformers) {
  absl::StatusOr<Golden> golden = LoadGolden(GetParam());
  ASSERT_TRUE(golden.ok()) << golden.status();
  const Reference& reference = golden->reference;
  CpuBackendOptions options;
  options.block_size = kBlockSize;
  options.num_kv_blocks = kBlocksPerSequence * static_cast<int64_t>(golden->prompts.size());
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateCpuBackend(testing::TestModelPath(reference.model), options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  ASSERT_EQ((*backend)->vocab_size(), golden->vocab_size);
  const int64_t vocab = golden->vocab_size;

  int64_t row = 0;
  for (size_t prompt_index = 0; prompt_index < golden->prompts.size(); ++prompt_index) {
    SCOPED_TRACE(absl::StrCat(GetParam(), " prompt ", prompt_index));
    std::vector<int32_t> tokens = golden->prompts[prompt_index];
    const int64_t sequence_id = static_cast<int64_t>(prompt_index);
    std::vector<float> logits;
    int64_t start = 0;
    for (int64_t position : golden->logit_positions[prompt_index]) {
      StepPlan plan;
      plan.sequences.push_back(Chunk(sequence_id, tokens, start, position + 1 - start));
      ASSERT_TRUE((*backend)->Forward(plan, logits).ok());
      ASSERT_EQ(static_cast<int64_t>(logits.size()), vocab);
      const float* expected = reference.logits.data() + row * vocab;
      float largest_error = 0;
      int64_t worst_token = 0;
      for (int64_t token = 0; token < vocab; ++token) {
        const float error = std::fabs(logits[token] - expected[token]);
        if (!(error <= largest_error)) {  // also catches NaN
          largest_error = error;
          worst_token = token;
        }
      }
      EXPECT_LE(largest_error, reference.logit_tolerance)
          << "position " << position << ": token " << worst_token << " has logit "
          << logits[worst_token] << ", transformers says " << expected[worst_token];
      start = position + 1;
      ++row;
    }

    std::vector<int32_t> generated;
    const int64_t prompt_length = static_cast<int64_t>(tokens.size());
    const size_t wanted = reference.greedy[prompt_index].size();
    while (true) {
      generated.push_back(Argmax(logits));
      tokens.push_back(generated.back());
      if (generated.size() == wanted) break;
      StepPlan plan;
      plan.sequences.push_back(
          Chunk(sequence_id, tokens, static_cast<int64_t>(tokens.size()) - 1, 1));
      ASSERT_TRUE((*backend)->Forward(plan, logits).ok());
    }
    size_t agreeing = 0;
    while (agreeing < wanted && generated[agreeing] == reference.greedy[prompt_index][agreeing]) {
      ++agreeing;
    }
    if (reference.check_greedy) {
      EXPECT_EQ(generated, reference.greedy[prompt_index])
          << "first difference at generated token " << agreeing << " (position "
          << prompt_length + static_cast<int64_t>(agreeing) << ")";
    } else {
      // bf16 rounding may legitimately flip a near-tie; the agreement is worth seeing anyway.
      std::printf("%s prompt %zu: greedy agrees with transformers for %zu of %zu tokens\n",
                  GetParam().c_str(), prompt_index, agreeing, wanted);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(References, GoldenLogitsTest,
                         ::testing::Values("tiny-f32", "gqa-small-f32", "tiny-bf16-torch-bf16",
                                           "tiny-bf16-torch-f32"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace reflect
