// ParallelConfig: where a worker process sits in its replica group and how it reaches the group's
// leader, from command-line flags or from a Kubernetes LeaderWorkerSet pod's environment
// (issue #4, deploy/). A pure function of its inputs, so every case is unit-testable.
//
// Sources, first match wins:
//   1. explicit: --rank and --leader_address host:port (both, when the world has several ranks);
//   2. LeaderWorkerSet: LWS_LEADER_ADDRESS (the leader pod's DNS name; port --rendezvous_port),
//      LWS_GROUP_SIZE (pods in the group), LWS_WORKER_INDEX (this pod's index, 0 = leader pod);
//      rank = worker_index × ranks_per_pod + local_rank, and LWS_GROUP_SIZE × ranks_per_pod must
//      equal tensor_parallel × pipeline_parallel;
//   3. nothing, when tensor_parallel × pipeline_parallel is 1: rank 0 alone, no leader address.
// Errors are INVALID_ARGUMENT naming the flag or variable.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

struct ParallelConfig {
  ParallelLayout layout;
  std::string leader_host;  // empty when the world is one rank and no leader was named
  int leader_port = 0;      // the rendezvous port (TcpStoreServer) on leader_host
  CommunicatorKind tensor_kind = CommunicatorKind::kGloo;
  absl::Duration join_timeout = absl::Seconds(60);  // for every rank to join the group
};

// The flag values, as worker_main reads them.
struct ParallelFlags {
  int tensor_parallel = 1;
  int pipeline_parallel = 1;
  int rank = -1;               // --rank; -1: not given
  std::string leader_address;  // --leader_address host:port; empty: not given
  int rendezvous_port = 29500;
  int ranks_per_pod = 1;                     // processes per LeaderWorkerSet pod
  int local_rank = 0;                        // this process among them
  std::string tensor_communicator = "gloo";  // single, gloo or nccl
  absl::Duration join_timeout = absl::Seconds(60);
};

// Returns an environment variable's value, or nullopt when it is not set.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string& name)>;

absl::StatusOr<ParallelConfig> ResolveParallelConfig(const ParallelFlags& flags,
                                                     const EnvironmentLookup& environment);

// Looks variables up in this process's environment (getenv).
std::optional<std::string> ProcessEnvironment(const std::string& name);

}  // namespace reflect
