#include "worker/generator.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "scheduler/step_plan.h"
#include "worker/backend.h"

namespace reflect {
namespace {

int64_t CeilDivide(int64_t numerator, int64_t denominator) {
  return (numerator + denominator - 1) / denominator;
}

// One request while it runs.
struct ActiveSequence {
  std::vector<int32_t> tokens;  // prompt, then generated
  size_t prompt_length = 0;
  int64_t max_length = 0;  // prompt + max_tokens, capped by the context length
  int64_t num_blocks_reserved = 0;
  int64_t num_computed_tokens = 0;
  std::vector<int32_t> block_table;
  bool running = false;
  bool finished = false;
};

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Checks one request and returns its longest possible length (prompt + generated tokens).
absl::StatusOr<int64_t> ValidateRequest(const GenerationRequest& request, size_t index,
                                        int64_t vocab_size, const GeneratorOptions& options) {
  const std::string name = absl::StrCat("request ", index);
  if (request.prompt_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the prompt is empty"));
  }
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": prompt token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (request.params.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": max_tokens must be at least 1, got ", request.params.max_tokens));
  }
  const int64_t prompt_length = static_cast<int64_t>(request.prompt_ids.size());
  int64_t max_length = prompt_length + request.params.max_tokens;
  if (options.max_model_length > 0) {
    if (prompt_length >= options.max_model_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": the prompt has ", prompt_length,
          " tokens, which leaves no room under the context length of ", options.max_model_length));
    }
    max_length = std::min(max_length, options.max_model_length);
  }
  return max_length;
}

}  // namespace

bool IsStopToken(const GenerationRequest& request, int32_t token) {
  return (!request.params.ignore_eos && Contains(request.eos_token_ids, token)) ||
         Contains(request.params.stop_token_ids, token);
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
  }
  return "length";
}

std::vector<PlannedChunk> PlanStep(std::span<const PlanningSequence> sequences,
                                   int64_t num_free_blocks, const GeneratorOptions& options) {
  std::vector<PlannedChunk> chunks;
  int64_t budget = options.max_num_batched_tokens;
  int64_t num_running = 0;
  for (const PlanningSequence& sequence : sequences) {
    if (sequence.running && !sequence.finished) ++num_running;
  }
  auto add_chunk = [&](size_t index, bool admit) {
    const PlanningSequence& sequence = sequences[index];
    const int64_t remaining = sequence.num_tokens - sequence.num_computed_tokens;
    const int64_t count = std::min(remaining, budget);
    chunks.push_back({.sequence_index = index,
                      .num_new_tokens = count,
                      .admit = admit,
                      .needs_logits = count == remaining});
    budget -= count;
  };
  auto is_running = [&](size_t index) {
    return sequences[index].running && !sequences[index].finished;
  };
  auto remaining = [&](size_t index) {
    return sequences[index].num_tokens - sequences[index].num_computed_tokens;
  };

  for (size_t index = 0; index < sequences.size() && budget > 0; ++index) {
    if (is_running(index) && remaining(index) == 1) add_chunk(index, /*admit=*/false);
  }
  for (size_t index = 0; index < sequences.size() && budget > 0; ++index) {
    if (is_running(index) && remaining(index) > 1) add_chunk(index, /*admit=*/false);
  }
  int64_t free_blocks = num_free_blocks;
  for (size_t index = 0; index < sequences.size() && budget > 0; ++index) {
    const PlanningSequence& sequence = sequences[index];
    if (sequence.running || sequence.finished) continue;
    if (num_running >= options.max_num_seqs || sequence.num_blocks_reserved > free_blocks) break;
    free_blocks -= sequence.num_blocks_reserved;
    ++num_running;
    add_chunk(index, /*admit=*/true);
  }
  return chunks;
}

Generator::Generator(Backend& backend, const GeneratorOptions& options)
    : backend_(backend),
      options_(options),
      block_allocator_(static_cast<int32_t>(backend.num_kv_blocks())) {}

absl::StatusOr<std::vector<GenerationResult>> Generator::Generate(
    const std::vector<GenerationRequest>& requests, const TokenCallback& on_token) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  auto seconds_since_start = [&] {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  if (options_.max_num_batched_tokens < 1 || options_.max_num_seqs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_batched_tokens and max_num_seqs must be positive, got ",
                     options_.max_num_batched_tokens, " and ", options_.max_num_seqs));
  }
  const int64_t vocab_size = backend_.vocab_size();
  const int64_t block_size = backend_.block_size();

  std::vector<ActiveSequence> sequences(requests.size());
  for (size_t index = 0; index < requests.size(); ++index) {
    REFLECT_ASSIGN_OR_RETURN(const int64_t max_length,
                             ValidateRequest(requests[index], index, vocab_size, options_));
    ActiveSequence& sequence = sequences[index];
    sequence.tokens = requests[index].prompt_ids;
    sequence.prompt_length = requests[index].prompt_ids.size();
    sequence.max_length = max_length;
    // The last token is sampled, never run, so the KV cache holds max_length - 1 positions.
    sequence.num_blocks_reserved = CeilDivide(max_length - 1, block_size);
    if (sequence.num_blocks_reserved > block_allocator_.num_blocks()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("request ", index, " may reach ", max_length, " tokens, which needs ",
                       sequence.num_blocks_reserved, " KV blocks of ", block_size,
                       " tokens; the whole pool has ", block_allocator_.num_blocks()));
    }
  }

  std::vector<GenerationResult> results(requests.size());
  auto release_blocks = [&](ActiveSequence& sequence) {
    for (int32_t block : sequence.block_table) block_allocator_.Release(block);
    sequence.block_table.clear();
  };
  auto fail = [&](absl::Status status) {
    for (ActiveSequence& sequence : sequences) release_blocks(sequence);
    return status;
  };

  std::vector<PlanningSequence> planning(sequences.size());
  std::vector<SamplingRow> sampling_rows;
  std::vector<SampledToken> sampled_tokens;
  size_t num_unfinished = sequences.size();
  while (num_unfinished > 0) {
    for (size_t index = 0; index < sequences.size(); ++index) {
      const ActiveSequence& sequence = sequences[index];
      planning[index] = {.running = sequence.running,
                         .finished = sequence.finished,
                         .num_tokens = static_cast<int64_t>(sequence.tokens.size()),
                         .num_computed_tokens = sequence.num_computed_tokens,
                         .num_blocks_reserved = sequence.num_blocks_reserved};
    }
    const std::vector<PlannedChunk> chunks =
        PlanStep(planning, block_allocator_.num_free(), options_);
    if (chunks.empty()) {
      return fail(absl::InternalError("the generator planned an empty step with work left"));
    }

    StepPlan plan;
    plan.sequences.reserve(chunks.size());
    for (const PlannedChunk& chunk : chunks) {
      ActiveSequence& sequence = sequences[chunk.sequence_index];
      if (chunk.admit) {
        sequence.running = true;
        for (int64_t count = 0; count < sequence.num_blocks_reserved; ++count) {
          absl::StatusOr<int32_t> block = block_allocator_.Allocate();
          if (!block.ok()) return fail(block.status());
          sequence.block_table.push_back(*block);
        }
      }
      const int64_t end = sequence.num_computed_tokens + chunk.num_new_tokens;
      ScheduledSequence& scheduled = plan.sequences.emplace_back();
      scheduled.sequence_id = static_cast<int64_t>(chunk.sequence_index);
      scheduled.token_ids.assign(sequence.tokens.begin() + sequence.num_computed_tokens,
                                 sequence.tokens.begin() + end);
      scheduled.start_position = sequence.num_computed_tokens;
      scheduled.block_table.assign(sequence.block_table.begin(),
                                   sequence.block_table.begin() + CeilDivide(end, block_size));
      scheduled.needs_logits = chunk.needs_logits;
    }

    sampling_rows.clear();
    for (const PlannedChunk& chunk : chunks) {
      if (!chunk.needs_logits) continue;
      const ActiveSequence& sequence = sequences[chunk.sequence_index];
      // The sequence's tokens after this chunk: its prompt, then what it generated.
      const std::span<const int32_t> all_tokens(sequence.tokens);
      sampling_rows.push_back(
          SamplingRow{.sequence_id = static_cast<int64_t>(chunk.sequence_index),
                      .params = &requests[chunk.sequence_index].params,
                      .prompt_ids = all_tokens.first(sequence.prompt_length),
                      .generated_ids = all_tokens.subspan(sequence.prompt_length),
                      .position = std::ssize(sequence.tokens)});
    }
    if (absl::Status status = backend_.ForwardAndSample(plan, sampling_rows, sampled_tokens);
        !status.ok()) {
      return fail(std::move(status));
    }

    size_t row = 0;
    for (const PlannedChunk& chunk : chunks) {
      ActiveSequence& sequence = sequences[chunk.sequence_index];
      sequence.num_computed_tokens += chunk.num_new_tokens;
      if (!chunk.needs_logits) continue;
      const GenerationRequest& request = requests[chunk.sequence_index];
      GenerationResult& result = results[chunk.sequence_index];
      SampledToken& sampled = sampled_tokens[row++];
      sequence.tokens.push_back(sampled.token_id);
      result.generated_ids.push_back(sampled.token_id);
      result.logprobs.push_back(sampled.logprob);
      if (request.params.logprobs > 0) {
        result.top_logprobs.push_back(std::move(sampled.top_logprobs));
      }
      if (result.generated_ids.size() == 1) {
        result.time_to_first_token_seconds = seconds_since_start();
      }
      if (on_token) on_token(chunk.sequence_index, sampled.token_id);

      const bool stop_token = IsStopToken(request, sampled.token_id);
      const bool at_length = static_cast<int64_t>(sequence.tokens.size()) >= sequence.max_length;
      if (stop_token || at_length) {
        result.finish_reason = stop_token ? FinishReason::kStop : FinishReason::kLength;
        result.total_seconds = seconds_since_start();
        sequence.finished = true;
        release_blocks(sequence);
        --num_unfinished;
      }
    }
  }
  return results;
}

}  // namespace reflect
