// Checks a StepPlan against what a backend holds (DESIGN §3: the worker trusts nothing it can
// check cheaply). Shared by the CPU stage and the CUDA backend, so both refuse the same plans
// with the same messages. Plain functions.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "scheduler/step_plan.h"

namespace reflect {

// What a plan may ask of a backend. A backend without a per-step bound passes the largest
// int64_t for max_tokens / max_sequences.
struct StepLimits {
  int64_t vocab_size = 0;
  int64_t num_kv_blocks = 0;  // block ids the scheduler may use: [0, num_kv_blocks)
  int64_t num_host_blocks = 0;
  int64_t block_size = 0;
  int64_t max_tokens = 0;     // per step
  int64_t max_sequences = 0;  // per step
  int64_t max_context = 0;    // positions must stay below it
};

// INVALID_ARGUMENT naming the first problem: a block id, host block id, token id or position out
// of range, a block table too short, a sequence without tokens, too many tokens or sequences.
absl::Status ValidateStepPlan(const StepPlan& plan, const StepLimits& limits);

}  // namespace reflect
