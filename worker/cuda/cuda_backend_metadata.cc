#include "worker/cuda/cuda_backend_metadata.h"

#include <algorithm>
#include <vector>

namespace reflect::cuda {
namespace {

int64_t BlocksFor(int64_t positions, int64_t block_size) {
  return (positions + block_size - 1) / block_size;
}

}  // namespace

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
