// StepPlan: everything a rank needs to run one engine iteration (DESIGN §3). Plain data, produced
// by the leader's scheduler, consumed by every rank's Backend. StepResult goes back to the leader.
#pragma once

#include <cstdint>
#include <vector>

#include "kvcache/block_operations.h"

namespace reflect {

// One sequence's share of a step: a prefill chunk, or the single last token of a decode.
struct ScheduledSequence {
  int64_t sequence_id = 0;
  // The tokens to run now; their positions are start_position, start_position + 1, ...
  std::vector<int32_t> token_ids;
  // Tokens of this sequence already in the KV cache (= position of token_ids[0]).
  int64_t start_position = 0;
  // Physical KV block ids for logical blocks 0, 1, ...; covers positions
  // [0, start_position + token_ids.size()). Block size is fixed per engine.
  std::vector<int32_t> block_table;
  // True when the step must return logits for the last of token_ids (the last prefill chunk,
  // or a decode); false for a non-final prefill chunk.
  bool needs_logits = true;
};

// BlockCopy (copy-on-write) and BlockSwap (device <-> host) come from kvcache/block_operations.h.
//
// A rank applies the block operations in this order, then runs the forward pass:
//   1. swap_out     (device → host)  reads blocks that this step's planning already freed;
//   2. block_copies (device → device), in list order;
//   3. swap_in      (host → device)  writes blocks freshly allocated to swapped-in sequences.
// The scheduler never swaps in and out in the same step, so a host block is never written and
// read in one step.
struct StepPlan {
  std::vector<BlockCopy> block_copies;
  std::vector<ScheduledSequence> sequences;
  std::vector<BlockSwap> swap_out;
  std::vector<BlockSwap> swap_in;
};

// One of the most likely tokens at a position, with its natural-log probability under the same
// processed distribution as SampledToken::logprob.
struct TokenAlternative {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

// The sampled outcome for one sequence that needed logits.
struct SampledToken {
  int64_t sequence_id = 0;
  int32_t token_id = 0;
  // Natural log of the chosen token's probability under the processed distribution: the one the
  // draw used (penalties, temperature, then renormalized over what top-k, top-p and min-p keep);
  // for greedy, the log-softmax of the penalized logits at temperature 1 (docs/sampling.md).
  float logprob = 0.0f;
  // With SamplingParams.logprobs = N > 0: the N most likely tokens under that same distribution,
  // most likely first, equal probabilities by lower id; fewer when the distribution gives fewer
  // than N tokens a nonzero probability (top-k, top-p, min-p). The chosen token's entry, when it
  // is among them, equals `logprob`. Empty when N = 0 (nothing is computed then).
  std::vector<TokenAlternative> top_logprobs = {};
};

struct StepResult {
  std::vector<SampledToken> tokens;
};

}  // namespace reflect
