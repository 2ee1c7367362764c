#include "worker/cuda/cuda_backend_metadata.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reflect::cuda {
namespace {

int64_t BlocksFor(int64_t positions, int64_t block_size) {
  return (positions + block_size - 1) / block_size;
}

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
  const int64_t blocks_needed = BlocksFor(end, limits.block_size);
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

bool IsDecodeStep(const StepPlan& plan) {
  return !plan.sequences.empty() &&
         std::ranges::all_of(plan.sequences, [](const ScheduledSequence& sequence) {
           return sequence.token_ids.size() == 1 && sequence.needs_logits;
         });
}

int64_t ContextBucket(int64_t context, int64_t keys_per_split) {
  const int64_t splits = std::max<int64_t>(1, BlocksFor(context, keys_per_split));
  int64_t power = 1;
  while (power < splits) power *= 2;
  return power * keys_per_split;
}

StepLayout LayoutStep(const StepPlan& plan, int64_t block_size, int64_t keys_per_split,
                      int64_t padded_rows) {
  StepLayout layout;
  int64_t longest = 1;
  for (const ScheduledSequence& sequence : plan.sequences) {
    const int64_t tokens = static_cast<int64_t>(sequence.token_ids.size());
    layout.tokens += tokens;
    if (sequence.needs_logits) ++layout.logit_rows;
    longest = std::max(longest, sequence.start_position + tokens);
  }
  layout.sequences = static_cast<int64_t>(plan.sequences.size());
  if (padded_rows > 0) {
    layout.tokens = layout.sequences = layout.logit_rows = padded_rows;
  }
  layout.max_context = ContextBucket(longest, keys_per_split);
  layout.blocks_per_sequence = layout.max_context / block_size;
  return layout;
}

void PackStepMetadata(const StepPlan& plan, const StepLayout& layout, int64_t block_size,
                      int32_t scratch_block, int32_t* out) {
  int32_t* const token_ids = out + layout.token_ids_offset();
  int32_t* const positions = out + layout.positions_offset();
  int32_t* const token_sequence = out + layout.token_sequence_offset();
  int32_t* const logit_rows = out + layout.logit_rows_offset();
  int32_t* const block_tables = out + layout.block_tables_offset();
  int64_t row = 0;
  int64_t logit_row = 0;
  for (size_t index = 0; index < plan.sequences.size(); ++index) {
    const ScheduledSequence& sequence = plan.sequences[index];
    const int64_t tokens = static_cast<int64_t>(sequence.token_ids.size());
    for (int64_t offset = 0; offset < tokens; ++offset, ++row) {
      token_ids[row] = sequence.token_ids[offset];
      positions[row] = static_cast<int32_t>(sequence.start_position + offset);
      token_sequence[row] = static_cast<int32_t>(index);
    }
    if (sequence.needs_logits) logit_rows[logit_row++] = static_cast<int32_t>(row - 1);
    int32_t* const table = block_tables + index * layout.blocks_per_sequence;
    const int64_t blocks = BlocksFor(sequence.start_position + tokens, block_size);
    std::copy_n(sequence.block_table.begin(), blocks, table);
    std::fill(table + blocks, table + layout.blocks_per_sequence, scratch_block);
  }
  // Graph padding: one token per padding sequence, so row, sequence and logits row coincide.
  for (; row < layout.tokens; ++row) {
    token_ids[row] = 0;
    positions[row] = 0;
    token_sequence[row] = static_cast<int32_t>(row);
    logit_rows[logit_row++] = static_cast<int32_t>(row);
    int32_t* const table = block_tables + row * layout.blocks_per_sequence;
    std::fill(table, table + layout.blocks_per_sequence, scratch_block);
  }
}

}  // namespace reflect::cuda
