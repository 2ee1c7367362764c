// The host side of a CUDA backend step (cuda_backend.h; the plan is checked first with
// worker/step_plan_checks.h): packing what the kernels need per token and per sequence into one
// int32 array that a single pinned → device copy uploads.
//
// Layout of the packed array (StepLayout gives the offsets):
//   token_ids[tokens] | positions[tokens] | token_sequence[tokens] | logit_rows[logit_rows] |
//   block_tables[sequences][blocks_per_sequence]
// A decode step replayed from a CUDA graph is padded to `padded_rows` tokens, sequences and
// logit rows: padding token i is token 0 at position 0 of its own sequence i, whose block table
// is all `scratch_block`, and its logits row is i (computed, never read). Block tables are padded
// with `scratch_block` past the blocks a sequence's positions need.
//
// Pure host code; no CUDA calls. Thread-safety: plain functions.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "scheduler/step_plan.h"
#include "worker/step_plan_checks.h"

namespace reflect::cuda {

// True when every sequence runs exactly one token and needs its logits (a decode step; there is
// at least one sequence): such steps can replay a CUDA graph.
bool IsDecodeStep(const StepPlan& plan);

// The attention context a step is run for: `context` rounded up to keys_per_split times a power
// of two. Sizes the attention grid and the block tables; its few values key the decode graphs.
int64_t ContextBucket(int64_t context, int64_t keys_per_split);

struct StepLayout {
  int64_t tokens = 0;
  int64_t sequences = 0;
  int64_t logit_rows = 0;
  int64_t blocks_per_sequence = 0;  // block table row length: max_context / block_size
  int64_t max_context = 0;          // ContextBucket of the longest sequence

  int64_t token_ids_offset() const { return 0; }
  int64_t positions_offset() const { return tokens; }
  int64_t token_sequence_offset() const { return 2 * tokens; }
  int64_t logit_rows_offset() const { return 3 * tokens; }
  int64_t block_tables_offset() const { return 3 * tokens + logit_rows; }
  int64_t size() const { return block_tables_offset() + sequences * blocks_per_sequence; }
};

// The layout of a validated plan; padded_rows = 0 for none, else ≥ the plan's sequences (a
// decode step only).
StepLayout LayoutStep(const StepPlan& plan, int64_t block_size, int64_t keys_per_split,
                      int64_t padded_rows);

// Fills `out` (layout.size() values) for a validated plan.
void PackStepMetadata(const StepPlan& plan, const StepLayout& layout, int64_t block_size,
                      int32_t scratch_block, int32_t* out);

}  // namespace reflect::cuda
