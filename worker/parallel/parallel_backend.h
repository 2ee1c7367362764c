// The replica leader's Backend for a TP × PP CPU replica (DESIGN §1, §6): rank 0 runs its own
// shard and drives the followers (follower.h) through the step protocol of parallel_rank.h.
//
// Forward validates the plan (an invalid one is refused before any rank sees it), broadcasts it,
// runs rank 0's shard and returns the full [rows, vocab] logits, assembled on the leader alone
// from the last-stage TP ranks' shards. Logits equal the single-rank backend's up to the
// all-reduce's summation order (bit-identical with TP = 1, any PP).
//
// Errors: a communicator failure mid-step comes back from Forward as the communicator reports it
// (UNAVAILABLE, or DEADLINE_EXCEEDED after the communicator's timeout or kPeerTimeout); the
// replica is then broken and later steps fail too. Shutdown (or the destructor) broadcasts the
// stop message, so followers return OK.
//
// Ownership: owns rank 0's ParallelRank (its shard, KV pool and groups) and keeps the checkpoint
// alive. Thread-safety: one caller at a time (the engine loop), like every Backend.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/parallel_layout.h"
#include "worker/parallel/parallel_rank.h"

namespace reflect {

class ParallelBackend : public Backend {
 public:
  // Where the last Forward's time went (forward, all-reduce, waits on the world group).
  virtual ParallelStepStats last_step_stats() const = 0;
  // Tells the followers to return; later Forwards fail with FAILED_PRECONDITION. Idempotent.
  virtual absl::Status Shutdown() = 0;
};

// Loads rank 0's shard of `checkpoint` (`group.layout.rank` must be 0). `options` size this
// rank's KV pool (its KV heads and layers only); every rank must get the same num_kv_blocks,
// block_size and num_host_blocks. INVALID_ARGUMENT for a shard that does not divide the model
// or a group that disagrees with its layout.
absl::StatusOr<std::unique_ptr<ParallelBackend>> CreateParallelCpuBackend(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const CpuBackendOptions& options, ReplicaGroup group);

}  // namespace reflect
