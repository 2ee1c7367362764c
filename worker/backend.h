// Backend: runs the model for one StepPlan (DESIGN §3, §6). One coarse call per step; CPU and
// CUDA implement the same interface, so nothing on the hot path is a per-op virtual call.
//
// Thread-safety: one caller at a time (the engine loop). The backend owns the KV memory; which
// blocks belong to whom is decided outside (kvcache/), and arrives as block tables in the plan.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/step_plan.h"

namespace reflect {

class Backend {
 public:
  virtual ~Backend() = default;

  // Applies the plan's block operations (swap_out, block_copies, swap_in, in the order
  // scheduler/step_plan.h documents), runs every sequence's new tokens (writing their K/V into the
  // blocks of their block tables), and resizes `logits` to [rows, vocab_size] row-major with
  // one row per sequence whose needs_logits is set, in plan order (the row of its last token).
  virtual absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) = 0;

  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_kv_blocks() const = 0;
  virtual int64_t block_size() const = 0;  // tokens per KV block
};

}  // namespace reflect
