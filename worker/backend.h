// Backend: runs the model for one StepPlan (DESIGN §3, §6). One coarse call per step; CPU and
// CUDA implement the same interface, so nothing on the hot path is a per-op virtual call.
//
// Thread-safety: one caller at a time (the engine loop). The backend owns the KV memory; which
// blocks belong to whom is decided outside (kvcache/), and arrives as block tables in the plan.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "common/sampling_params.h"
#include "scheduler/step_plan.h"

namespace reflect {

// What sampling needs for one logits row: the i-th sequence of a plan whose needs_logits is set.
// The spans and the params are the caller's and live until the call returns.
struct SamplingRow {
  int64_t sequence_id = 0;
  const SamplingParams* params = nullptr;
  std::span<const int32_t> prompt_ids;     // feed the repetition penalty
  std::span<const int32_t> generated_ids;  // feed every penalty
  int64_t position = 0;                    // the sampled token's position (seeds the draw)
};

// OK when `rows` has one entry per sequence of `plan` with needs_logits; INVALID_ARGUMENT
// otherwise. Every ForwardAndSample checks this first.
absl::Status CheckSamplingRows(const StepPlan& plan, std::span<const SamplingRow> rows);

class Backend {
 public:
  virtual ~Backend() = default;

  // Applies the plan's block operations (swap_out, block_copies, swap_in, in the order
  // scheduler/step_plan.h documents), runs every sequence's new tokens (writing their K/V into the
  // blocks of their block tables), and resizes `logits` to [rows, vocab_size] row-major with
  // one row per sequence whose needs_logits is set, in plan order (the row of its last token).
  virtual absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) = 0;

  // Forward, then one token per logits row with SampleToken's semantics (worker/sampler.h):
  // `tokens` becomes rows.size() results in row order, sequence ids from `rows`. `rows` must
  // have one entry per sequence of the plan with needs_logits (INVALID_ARGUMENT otherwise).
  // This default samples on the host from Forward's logits; a device backend overrides it to
  // sample where the logits are and copy back only the tokens.
  virtual absl::Status ForwardAndSample(const StepPlan& plan, std::span<const SamplingRow> rows,
                                        std::vector<SampledToken>& tokens);

  virtual int64_t vocab_size() const = 0;
  virtual int64_t num_kv_blocks() const = 0;
  virtual int64_t block_size() const = 0;  // tokens per KV block

 private:
  std::vector<float> host_logits_;  // the default ForwardAndSample's scratch
};

}  // namespace reflect
