// ThreadReplica: a TP × PP CPU replica whose ranks are threads of one process (`reflect bench`,
// tests), joined over Gloo through an InProcessStore. Rank 0's ParallelBackend is the caller's to
// drive; ranks 1.. run RunFollower on threads of their own.
//
// Lifetime: the constructor returns once every rank has joined and loaded its shard, or with
// rank 0's error in leader() (the followers then end on their own: their group is broken or
// their shard was refused alike). JoinFollowers (or the destructor) destroys rank 0's backend if
// the replica still holds it — which stops the followers — and joins their threads, so no thread
// outlives the replica.
//
// Thread-safety: one caller at a time, like every Backend.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/parallel_backend.h"

namespace reflect {

class ThreadReplica {
 public:
  // `options` apply to every rank (num_threads is per rank).
  ThreadReplica(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
                int tensor_parallel, int pipeline_parallel, const CpuBackendOptions& options,
                const GlooOptions& gloo_options);
  ~ThreadReplica();  // JoinFollowers()
  ThreadReplica(const ThreadReplica&) = delete;
  ThreadReplica& operator=(const ThreadReplica&) = delete;

  // Rank 0's backend, or why rank 0 could not start.
  const absl::StatusOr<std::unique_ptr<ParallelBackend>>& leader() const { return leader_; }
  // Hands rank 0's backend to the caller, who must destroy it before JoinFollowers can return.
  std::unique_ptr<ParallelBackend> TakeLeader() { return std::move(*leader_); }

  // Stops the replica (destroying rank 0's backend if still held here), joins the followers and
  // returns each one's status, ranks 1.. in order. Later calls return nothing.
  std::vector<absl::Status> JoinFollowers();

 private:
  absl::StatusOr<std::unique_ptr<ParallelBackend>> leader_;
  std::vector<absl::Status> follower_status_;  // by rank; [0] unused
  std::vector<std::thread> threads_;
};

}  // namespace reflect
