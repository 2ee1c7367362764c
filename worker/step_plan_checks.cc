#include "worker/step_plan_checks.h"

#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

absl::Status ValidateSwaps(const std::vector<BlockSwap>& swaps, const char* direction,
                           const StepLimits& limits) {
  for (const BlockSwap& swap : swaps) {
    if (swap.device_block < 0 || swap.device_block >= limits.num_kv_blocks || swap.host_block < 0 ||
        swap.host_block >= limits.num_host_blocks) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s of device block %d / host block %d: ids must be in [0, %d) and [0, %d)", direction,
          swap.device_block, swap.host_block, limits.num_kv_blocks, limits.num_host_blocks));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSequence(const ScheduledSequence& sequence, const StepLimits& limits) {
  if (sequence.token_ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d: no tokens to run", sequence.sequence_id));
  }
  const int64_t tokens = static_cast<int64_t>(sequence.token_ids.size());
  if (sequence.start_position < 0 || sequence.start_position > limits.max_context - tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d: positions %d..%d outside the model's context [0, %d)", sequence.sequence_id,
        sequence.start_position, sequence.start_position + tokens - 1, limits.max_context));
  }
  for (const int32_t token : sequence.token_ids) {
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d: token id %d outside the vocabulary [0, %d)",
                          sequence.sequence_id, token, limits.vocab_size));
    }
  }
  const int64_t end = sequence.start_position + tokens;
  const int64_t blocks_needed = (end + limits.block_size - 1) / limits.block_size;
  if (static_cast<int64_t>(sequence.block_table.size()) < blocks_needed) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d: block table has %d blocks, positions up to %d need %d",
                        sequence.sequence_id, sequence.block_table.size(), end, blocks_needed));
  }
  for (int64_t index = 0; index < blocks_needed; ++index) {
    const int32_t block = sequence.block_table[index];
    if (block < 0 || block >= limits.num_kv_blocks) {
      return absl::InvalidArgumentError(absl::StrFormat("sequence %d: block id %d outside [0, %d)",
                                                        sequence.sequence_id, block,
                                                        limits.num_kv_blocks));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateStepPlan(const StepPlan& plan, const StepLimits& limits) {
  REFLECT_RETURN_IF_ERROR(ValidateSwaps(plan.swap_out, "swap-out", limits));
  REFLECT_RETURN_IF_ERROR(ValidateSwaps(plan.swap_in, "swap-in", limits));
  for (const BlockCopy& copy : plan.block_copies) {
    if (copy.source_block < 0 || copy.source_block >= limits.num_kv_blocks ||
        copy.destination_block < 0 || copy.destination_block >= limits.num_kv_blocks) {
      return absl::InvalidArgumentError(
          absl::StrFormat("block copy %d -> %d: block ids must be in [0, %d)", copy.source_block,
                          copy.destination_block, limits.num_kv_blocks));
    }
  }
  if (static_cast<int64_t>(plan.sequences.size()) > limits.max_sequences) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the step has %d sequences; the backend runs at most %d per step",
                        plan.sequences.size(), limits.max_sequences));
  }
  int64_t tokens = 0;
  for (const ScheduledSequence& sequence : plan.sequences) {
    REFLECT_RETURN_IF_ERROR(ValidateSequence(sequence, limits));
    tokens += static_cast<int64_t>(sequence.token_ids.size());
  }
  if (tokens > limits.max_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the step has %d tokens; the backend runs at most %d per step", tokens, limits.max_tokens));
  }
  return absl::OkStatus();
}

}  // namespace reflect
