// ParallelRank: one rank of a TP × PP CPU replica (DESIGN §1, §6) — its shard of the model (a
// CpuStage), its groups, and the step protocol every rank follows.
//
// Step protocol, on the world group:
//   1. The leader broadcasts the plan: its encoded size (int64; kStopMessage asks followers to
//      return), then the step_plan_codec bytes. Skipped when the world has one rank.
//   2. Every rank applies the plan's block operations to its own KV pool, then splits the
//      sequences into MicroBatchBounds(plan, pp) micro-batches, a pure function of the plan, so
//      no rank needs to be told the split.
//   3. Micro-batches flow through the pipeline in order. Stage 0 embeds micro-batch k; stage s > 0
//      receives its [tokens, hidden] activations from the rank of stage s − 1 with the same
//      tp_rank (TP ranks of a stage hold identical bits after each all-reduce, so no tensor
//      broadcast is needed); each stage runs its layers, then sends the activations to stage
//      s + 1 and goes on with micro-batch k + 1 while the next stage works on k, so up to PP
//      micro-batches are in flight.
//   4. Each last-stage TP rank r computes its [logit rows, vocab rows of r] shard and sends it to
//      the leader, which places it into the full [rows, vocab] logits. Only the leader ever holds
//      full logits.
// Sends complete only when the peer receives, so the leader, which feeds the pipeline and drains
// it, takes the logits of micro-batch k − (pp − 1) before it sends micro-batch k. Message sizes
// follow from the plan and the layout; nothing else is framed.
//
// Every step's result is deterministic and independent of the split: each row's arithmetic is
// batch invariant (cpu_stage.h). Errors: a communicator failure (a peer gone, a timeout) is
// returned as the communicator reports it (UNAVAILABLE or DEADLINE_EXCEEDED), after which the
// replica is broken. A rank waits at most kPeerTimeout for a peer's activations or logits.
//
// Ownership: owns its stage and its ReplicaGroup. Thread-safety: one caller at a time.
// Cost per step: the stage's compute, plus per micro-batch one activation message per stage
// boundary and TP rank, and one logit shard per last-stage TP rank.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model_config.h"
#include "scheduler/step_plan.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/cpu/cpu_stage.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

// The encoded-size word that tells followers to return.
inline constexpr int64_t kStopMessage = -1;
// How long a rank waits for a peer's activations or logit shard (a CPU step of a large model
// can take minutes; a peer that dies fails the wait at once).
inline constexpr absl::Duration kPeerTimeout = absl::Minutes(10);

// Where one rank's last step went; the leader's covers the whole step.
struct ParallelStepStats {
  double forward_seconds = 0.0;        // the whole step on this rank
  double allreduce_seconds = 0.0;      // in tensor-group all-reduces
  double pipeline_wait_seconds = 0.0;  // in world messages: plan, activations, logit shards
};

// The micro-batches of `plan`: min(pipeline_parallel, sequences) ranges of consecutive sequences,
// balanced by tokens, none empty; micro-batch k is sequences [bounds[k], bounds[k + 1]).
std::vector<size_t> MicroBatchBounds(const StepPlan& plan, int pipeline_parallel);

class ParallelRank {
 public:
  // Loads `checkpoint`'s weights (kept alive for the embedding's in-place reads), cuts this
  // rank's shard (model_shard.h) and packs it. INVALID_ARGUMENT for a shard that does not divide
  // the model or a group whose sizes or ranks disagree with its layout.
  static absl::StatusOr<std::unique_ptr<ParallelRank>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
      const CpuBackendOptions& options, ReplicaGroup group);

  int64_t vocab_size() const { return vocab_size_; }
  int64_t num_kv_blocks() const { return stage_->num_kv_blocks(); }
  int64_t block_size() const { return stage_->block_size(); }
  const ParallelStepStats& last_step_stats() const { return stats_; }

  absl::Status Validate(const StepPlan& plan) const { return stage_->Validate(plan); }
  // Leader: protocol step 1 for `plan`, or the stop message.
  absl::Status SendPlan(const StepPlan& plan);
  absl::Status SendStop();
  // Follower: waits without limit for the next plan; nullopt for the stop message.
  absl::StatusOr<std::optional<StepPlan>> ReceivePlan();
  // Protocol steps 2-4 for a validated plan. The leader passes `logits` and gets the full
  // [rows, vocab] logits (Backend::Forward's contract); followers pass null.
  absl::Status Run(const StepPlan& plan, std::vector<float>* logits);

 private:
  ParallelRank(ReplicaGroup group, std::unique_ptr<cpu::CpuStage> stage, int64_t hidden_size,
               int64_t vocab_size);

  // Leader: receives (or, when it is the last stage itself, copies) the logit shards of
  // micro-batch `batch` into `logits`.
  absl::Status CollectLogits(int64_t batch, std::vector<float>& logits);
  // Runs a world-group call, counting its time as pipeline wait.
  absl::Status Timed(absl::FunctionRef<absl::Status()> call);

  ReplicaGroup group_;
  std::unique_ptr<cpu::CpuStage> stage_;
  const int64_t hidden_size_;
  const int64_t vocab_size_;  // the whole model's
  ParallelStepStats stats_;

  // Per step: the micro-batch bounds, and each micro-batch's first logit row (then the total).
  std::vector<size_t> bounds_;
  std::vector<int64_t> logit_offsets_;
  std::vector<float> shard_;    // this rank's logit shard of the current micro-batch
  std::vector<float> receive_;  // a peer's logit shard
  std::string encoded_;         // the plan's bytes, sent or received
};

}  // namespace reflect
