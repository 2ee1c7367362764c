// Scheduler: continuous (iteration-level) batching for one replica (DESIGN §4).
//
// Each engine iteration: Schedule(now) plans the step — which sequences run, how many tokens
// each, which block copies and swaps come first — the backend runs the StepPlan, and
// ApplyStepResult(result) appends the sampled tokens and retires finished sequences. The
// policy, in order:
//   1. Sequences whose deadline has passed are dropped before they cost a step.
//   2. Running sequences, by priority (larger first) then arrival: a decode gets its one token;
//      a continuing prefill gets a chunk of what the token budget leaves after reserving one
//      token for every decode behind it, so a 32k-token prompt never stalls anyone's decode.
//      A sequence that cannot get a block preempts the lowest-priority, latest-arriving
//      running sequence (possibly itself) until it can: by swap when the preemption policy
//      says so and host space allows, else by recompute. A sequence that is alone and still
//      cannot grow has outgrown the whole cache: it fails (kExceedsKvCapacity).
//   3. If nothing was preempted this step: the queue (swapped, preempted and new sequences),
//      by priority then arrival, is admitted while the token budget, max_num_seqs and free
//      blocks allow; the first that does not fit stops admission (no overtaking, so big
//      requests are not starved). Prefix-cache hits are not recomputed. A sequence whose next
//      prefix block another sequence computes in this very step waits one step to share it.
// AddRequest bounds the queue (requests and prompt tokens) with RESOURCE_EXHAUSTED, and
// rejects with INVALID_ARGUMENT a request that can never run (prompt + 1 token beyond the KV
// cache or the maximum model length).
//
// Pure: a deterministic function of its sequences, the block manager, the config and the
// `now` passed in — no clock, I/O or threads. Ownership: owns its sequences and its
// BlockManager. Thread-safety: none (the engine loop's). Cost: Schedule is O(running + admitted
// + blocks copied into the plan) and reuses its output's buffers, so steady-state steps do not
// allocate; see docs/scheduling.md for measured times.
#pragma once

#include <cstdint>
#include <memory>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kvcache/block_manager.h"
#include "scheduler/sequence.h"
#include "scheduler/step_plan.h"

namespace reflect {

// Preemption policies (values, DESIGN §11).
// Recompute: free the victim's blocks; it prefills again later (prefix-cache hits help).
struct RecomputePreemption {};
// Swap: copy the victim's blocks to host memory and back later, for victims of at least
// min_tokens tokens (recompute cost grows with length) while host blocks last; shorter victims,
// or any when the host pool is full, are recomputed.
struct SwapPreemption {
  int64_t min_tokens = 0;
};
using PreemptionPolicy = std::variant<RecomputePreemption, SwapPreemption>;

struct SchedulerConfig {
  int64_t max_num_batched_tokens = 2048;  // tokens per step, all sequences together
  int32_t max_num_seqs = 256;             // sequences holding KV blocks on the device
  int64_t max_waiting_requests = 1024;    // requests not yet admitted
  // Their work together: prompt tokens plus max_tokens (the output they may ask for), so a
  // queue of long traces is bounded by what it will cost, not only by its prompts.
  int64_t max_waiting_tokens = 4 << 20;
  int64_t max_model_length = 131072;  // prompt + generated tokens
  bool enable_chunked_prefill = true;
  PreemptionPolicy preemption = SwapPreemption{.min_tokens = 1024};
};

enum class PreemptionMode { kRecompute, kSwap };

struct Preemption {
  int64_t sequence_id = 0;
  PreemptionMode mode = PreemptionMode::kRecompute;
};

// A sequence that left the scheduler: finished normally (status OK), or dropped / failed with
// the error to send to the client.
struct RetiredSequence {
  int64_t sequence_id = 0;
  RetireReason reason = RetireReason::kNone;
  absl::Status status;
};

struct SchedulerOutput {
  StepPlan plan;
  std::vector<int64_t> admitted;  // began computing: new, or resumed after recompute
  std::vector<Preemption> preempted;
  std::vector<int64_t> swapped_in;
  std::vector<RetiredSequence> retired;  // deadline drops and failures found while planning
  int64_t num_batched_tokens = 0;
};

struct SchedulerCounters {
  int64_t preemptions_by_recompute = 0;
  int64_t preemptions_by_swap = 0;
  int64_t requests_rejected_queue_full = 0;
  int64_t requests_dropped_deadline = 0;
  int64_t requests_failed_kv_capacity = 0;
};

class Scheduler {
 public:
  // INVALID_ARGUMENT for a config that cannot work (non-positive sizes; without chunked
  // prefill, a token budget below the maximum model length).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerConfig& config,
                                                           const BlockManagerConfig& kv_config);

  // Queues a request. Ids must be unique over the scheduler's life (a cancelled id may still
  // have a token in flight). ALREADY_EXISTS for a live id; INVALID_ARGUMENT for an empty prompt,
  // max_tokens < 1, or a request that can never run; RESOURCE_EXHAUSTED when the waiting queue
  // is full (the router answers 429 with a retry hint).
  absl::Status AddRequest(SequenceRequest request);
  // Retires the sequence now, in any state, and frees its blocks (NOT_FOUND for an unknown id).
  // Safe while a step is in flight: the freed blocks are reused only by the next Schedule, and
  // ApplyStepResult ignores the sequence's token.
  absl::Status Cancel(int64_t sequence_id);

  // Plans the next step. The reference stays valid until the next Schedule. Call
  // ApplyStepResult once between two Schedules.
  const SchedulerOutput& Schedule(absl::Time now);
  // Records the step planned by the last Schedule: its tokens are computed, and `result` holds
  // one sampled token for each sequence whose entry needed logits (INVALID_ARGUMENT, changing
  // nothing, otherwise). Sequences that finish are appended to `finished` and forgotten.
  absl::Status ApplyStepResult(const StepResult& result, std::vector<RetiredSequence>& finished);

  const Sequence* FindSequence(int64_t sequence_id) const;
  int64_t num_running() const { return std::ssize(running_); }
  int64_t num_queued() const { return std::ssize(queue_); }  // waiting, preempted, swapped
  int64_t num_waiting_requests() const { return waiting_requests_; }
  int64_t num_waiting_tokens() const { return waiting_tokens_; }  // their prompt tokens
  // Their prompt plus max_tokens, what max_waiting_tokens bounds.
  int64_t num_waiting_work_tokens() const { return waiting_work_tokens_; }
  const SchedulerCounters& counters() const { return counters_; }
  const BlockManager& block_manager() const { return block_manager_; }

 private:
  Scheduler(const SchedulerConfig& config, const BlockManagerConfig& kv_config);

  void BeginOutput();
  void EndOutput();
  void DropExpired(absl::Time now);
  // Runs the running sequences; returns whether anything was preempted.
  bool ScheduleRunning(int64_t& token_budget);
  void AdmitFromQueue(int64_t& token_budget);
  void Preempt(Sequence& victim);
  void Emit(Sequence& sequence, int64_t num_new_tokens, absl::Span<const int32_t> block_table);
  void Retire(Sequence& sequence, RetireReason reason, absl::Status status,
              std::vector<RetiredSequence>& retired);
  void LeaveWaiting(Sequence& sequence);
  // Drops kFinished sequences from the lists and the map.
  void RemoveFinished();

  SchedulerConfig config_;
  BlockManager block_manager_;
  absl::node_hash_map<int64_t, Sequence> sequences_;
  // Both sorted by priority (larger first), then arrival, then id.
  std::vector<Sequence*> running_;  // kPrefilling, kDecoding
  std::vector<Sequence*> queue_;    // kWaiting, kPreempted, kSwapped
  int64_t waiting_requests_ = 0;
  int64_t waiting_tokens_ = 0;
  int64_t waiting_work_tokens_ = 0;
  bool step_in_flight_ = false;
  SchedulerOutput output_;
  int64_t num_entries_ = 0;  // entries of output_.plan.sequences filled by this Schedule
  std::vector<ScheduledSequence> spare_entries_;  // surplus plan entries, buffers kept
  absl::flat_hash_set<int64_t> sampled_ids_;      // ApplyStepResult's validation scratch
  std::vector<int64_t> finished_ids_;             // RemoveFinished's scratch
  SchedulerCounters counters_;
};

}  // namespace reflect
