// BenchReplica: a TP × PP CPU replica for `reflect bench` whose ranks are threads of this process
// (DESIGN §1, §6), joined over Gloo through an InProcessStore. Rank 0's ParallelBackend is driven
// by the caller; ranks 1.. run RunFollower on threads of their own.
//
// Lifetime: Start returns once every rank has joined and loaded its shard, or with every rank
// thread already joined. The destructor (or Stop) shuts the leader down and joins the followers,
// so no thread outlives the replica, even after a failed Forward.
//
// Thread-safety: one caller at a time, like every Backend.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/parallel_backend.h"

namespace reflect::cli {

class BenchReplica {
 public:
  // Opens the checkpoint in `model_dir` and starts a replica of `tensor_parallel` ×
  // `pipeline_parallel` ranks (both at least 1), each with `options` (num_threads per rank).
  // INVALID_ARGUMENT when the shape does not divide the model (the library's message); the open's
  // or a communicator's error otherwise.
  static absl::StatusOr<std::unique_ptr<BenchReplica>> Start(const std::string& model_dir,
                                                             const ModelConfig& config,
                                                             int tensor_parallel,
                                                             int pipeline_parallel,
                                                             const CpuBackendOptions& options);

  BenchReplica(const BenchReplica&) = delete;
  BenchReplica& operator=(const BenchReplica&) = delete;
  ~BenchReplica();

  // Rank 0's backend; valid until Stop.
  ParallelBackend& backend() { return *leader_; }

  // Shuts the leader down, joins the followers and returns the first error among them. Idempotent.
  absl::Status Stop();

 private:
  BenchReplica() = default;

  std::unique_ptr<ParallelBackend> leader_;
  std::vector<absl::Status> follower_status_;  // indexed by rank; [0] unused
  std::vector<std::thread> followers_;
};

}  // namespace reflect::cli
