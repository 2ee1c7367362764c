// `reflect logits --model DIR --logit_requests FILE --logits_out FILE [--greedy_tokens N]
//  [--backend cpu|cuda]`: a model's logits at chosen positions of token-id prompts, to compare
// engines and backends (tools/bench/hf_logits_check.py, run by tools/gpu-check.sh).
//
// FILE is a JSON object with "prompts" (lists of token ids) and "logit_positions" (per prompt,
// strictly ascending positions inside it); tests/fixtures/golden/manifest.json is one. Each prompt
// runs as its own sequence, prefilled in chunks that end at its logit positions, so interior
// positions also check chunked prefill. The rows go to --logits_out as float32 little-endian,
// [rows, vocab_size], in prompt then position order: the layout of the golden fixtures.
//
// With --greedy_tokens N each prompt then continues greedily for N tokens: the first is the
// argmax (lowest id among equals) of the logits at its last position, the others come from
// Backend::ForwardAndSample at temperature 0 (on CUDA, the device sampler). Prints one JSON line:
// {"rows": R, "vocab_size": V, "greedy": [[ids of prompt 0], ...]}.
//
// Exit codes: 0 done, 2 bad input (flags, requests file, model), 1 a failure while running.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "common/sampling_params.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "scheduler/step_plan.h"
#include "tools/reflect/backend_flags.h"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"

ABSL_FLAG(std::string, logit_requests, "",
          "logits: JSON file with \"prompts\" (token id lists) and \"logit_positions\"");
ABSL_FLAG(std::string, logits_out, "", "logits: output file of float32 rows [rows, vocab]");
ABSL_FLAG(int64_t, greedy_tokens, 0, "logits: greedy tokens to generate after each prompt");

namespace reflect::cli {
namespace {

constexpr int kBadInput = 2;
constexpr int kFailure = 1;
constexpr int64_t kBlockSize = 16;

struct LogitRequests {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int64_t>> positions;  // per prompt, strictly ascending
};

absl::StatusOr<LogitRequests> ReadLogitRequests(const std::string& path, int64_t vocab_size) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  const std::string text(std::istreambuf_iterator<char>(stream), {});
  LogitRequests requests;
  try {
    const nlohmann::json json = nlohmann::json::parse(text);
    requests.prompts = json.at("prompts").get<std::vector<std::vector<int32_t>>>();
    requests.positions = json.at("logit_positions").get<std::vector<std::vector<int64_t>>>();
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", error.what()));
  }
  if (requests.prompts.empty() || requests.prompts.size() != requests.positions.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": needs as many \"logit_positions\" lists as \"prompts\" (", requests.prompts.size(),
        " and ", requests.positions.size(), "), at least one"));
  }
  for (size_t index = 0; index < requests.prompts.size(); ++index) {
    const std::vector<int32_t>& prompt = requests.prompts[index];
    const std::vector<int64_t>& positions = requests.positions[index];
    if (prompt.empty() || positions.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": prompt ", index, " has no tokens or no logit positions"));
    }
    for (int32_t id : prompt) {
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": prompt ", index, " has token id ",
                                                       id, " outside [0, ", vocab_size, ")"));
      }
    }
    for (size_t at = 0; at < positions.size(); ++at) {
      const bool ascending = at == 0 ? positions[at] >= 0 : positions[at] > positions[at - 1];
      if (!ascending || positions[at] >= static_cast<int64_t>(prompt.size())) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": prompt ", index,
                                                       "'s logit positions must ascend inside [0, ",
                                                       prompt.size(), ")"));
      }
    }
  }
  return requests;
}

int64_t BlocksFor(int64_t tokens) { return (tokens + kBlockSize - 1) / kBlockSize; }

// Tokens [start, start + count) of `tokens` as one chunk of sequence `sequence_id`, whose KV
// blocks are `blocks` (its table is cut to the positions the chunk reaches).
ScheduledSequence Chunk(int64_t sequence_id, std::span<const int32_t> tokens, int64_t start,
                        int64_t count, std::span<const int32_t> blocks) {
  ScheduledSequence sequence;
  sequence.sequence_id = sequence_id;
  sequence.token_ids.assign(tokens.begin() + start, tokens.begin() + start + count);
  sequence.start_position = start;
  sequence.block_table.assign(blocks.begin(), blocks.begin() + BlocksFor(start + count));
  sequence.needs_logits = true;
  return sequence;
}

// Runs one prompt: appends its rows to `rows` and returns its greedy continuation.
absl::StatusOr<std::vector<int32_t>> RunPrompt(Backend& backend, int64_t sequence_id,
                                               const std::vector<int32_t>& prompt,
                                               const std::vector<int64_t>& positions,
                                               std::span<const int32_t> blocks,
                                               int64_t greedy_tokens, std::vector<float>& rows) {
  std::vector<float> logits;
  int64_t start = 0;
  for (int64_t position : positions) {
    StepPlan plan;
    plan.sequences.push_back(Chunk(sequence_id, prompt, start, position + 1 - start, blocks));
    REFLECT_RETURN_IF_ERROR(backend.Forward(plan, logits));
    rows.insert(rows.end(), logits.begin(), logits.end());
    start = position + 1;
  }
  std::vector<int32_t> generated;
  if (greedy_tokens == 0) return generated;
  const int64_t length = static_cast<int64_t>(prompt.size());
  if (start < length) {  // the rest of the prompt, for the logits of its last token
    StepPlan plan;
    plan.sequences.push_back(Chunk(sequence_id, prompt, start, length - start, blocks));
    REFLECT_RETURN_IF_ERROR(backend.Forward(plan, logits));
  }
  generated.push_back(
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  SamplingParams greedy;
  greedy.temperature = 0.0;
  greedy.max_tokens = greedy_tokens;
  greedy.ignore_eos = true;
  std::vector<int32_t> tokens = prompt;
  std::vector<SampledToken> sampled;
  while (static_cast<int64_t>(generated.size()) < greedy_tokens) {
    tokens.push_back(generated.back());
    const int64_t last = static_cast<int64_t>(tokens.size()) - 1;
    StepPlan plan;
    plan.sequences.push_back(Chunk(sequence_id, tokens, last, 1, blocks));
    const SamplingRow row{.sequence_id = sequence_id,
                          .params = &greedy,
                          .prompt_ids = prompt,
                          .generated_ids = generated,
                          .position = last + 1};
    REFLECT_RETURN_IF_ERROR(backend.ForwardAndSample(plan, {&row, 1}, sampled));
    generated.push_back(sampled.front().token_id);
  }
  return generated;
}

int Fail(const std::string& message, int exit_code) {
  std::fprintf(stderr, "reflect logits: %s\n", message.c_str());
  return exit_code;
}

// Bad input for INVALID_ARGUMENT, a failure for anything else.
int Fail(const absl::Status& status) {
  return Fail(status.ToString(),
              status.code() == absl::StatusCode::kInvalidArgument ? kBadInput : kFailure);
}

int RunLogits(const std::vector<char*>& positional_args) {
  if (!positional_args.empty()) {
    return Fail(absl::StrCat("unexpected argument '", positional_args.front(), "'"), kBadInput);
  }
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  const std::string out = absl::GetFlag(FLAGS_logits_out);
  const int64_t greedy_tokens = absl::GetFlag(FLAGS_greedy_tokens);
  if (model_dir.empty() || absl::GetFlag(FLAGS_logit_requests).empty() || out.empty()) {
    return Fail("--model, --logit_requests and --logits_out are required", kBadInput);
  }
  if (greedy_tokens < 0) {
    return Fail("--greedy_tokens must be >= 0", kBadInput);
  }
  const absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return Fail(config.status().ToString(), kBadInput);
  const absl::StatusOr<LogitRequests> requests =
      ReadLogitRequests(absl::GetFlag(FLAGS_logit_requests), config->model.vocab_size);
  if (!requests.ok()) return Fail(requests.status());

  BackendSizing sizing;
  sizing.block_size = kBlockSize;
  std::vector<int64_t> first_block;
  for (const std::vector<int32_t>& prompt : requests->prompts) {
    first_block.push_back(sizing.num_kv_blocks);
    sizing.num_kv_blocks += BlocksFor(static_cast<int64_t>(prompt.size()) + greedy_tokens);
    sizing.max_tokens_per_step =
        std::max(sizing.max_tokens_per_step, static_cast<int64_t>(prompt.size()));
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackendFromFlags(model_dir, sizing);
  if (!backend.ok()) return Fail(backend.status());

  std::vector<float> rows;
  nlohmann::json greedy = nlohmann::json::array();
  for (size_t index = 0; index < requests->prompts.size(); ++index) {
    const int64_t length = static_cast<int64_t>(requests->prompts[index].size());
    std::vector<int32_t> blocks(static_cast<size_t>(BlocksFor(length + greedy_tokens)));
    for (size_t block = 0; block < blocks.size(); ++block) {
      blocks[block] = static_cast<int32_t>(first_block[index] + static_cast<int64_t>(block));
    }
    absl::StatusOr<std::vector<int32_t>> generated =
        RunPrompt(**backend, static_cast<int64_t>(index), requests->prompts[index],
                  requests->positions[index], blocks, greedy_tokens, rows);
    if (!generated.ok()) return Fail(generated.status().ToString(), kFailure);
    greedy.push_back(*generated);
  }

  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(rows.data()),
             static_cast<std::streamsize>(rows.size() * sizeof(float)));
  if (!file.flush()) return Fail(absl::StrCat("cannot write ", out), kFailure);
  const int64_t vocab_size = (*backend)->vocab_size();
  const nlohmann::json summary = {{"rows", static_cast<int64_t>(rows.size()) / vocab_size},
                                  {"vocab_size", vocab_size},
                                  {"greedy", greedy}};
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

const CommandRegistration kRegistration(
    {"logits", "logits at chosen prompt positions, to compare backends and engines", &RunLogits});

}  // namespace
}  // namespace reflect::cli
