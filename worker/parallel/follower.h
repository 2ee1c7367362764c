// RunFollower: the life of a replica rank other than the leader (DESIGN §1): load its shard, then
// run every step the leader broadcasts (parallel_rank.h) until the stop message.
//
// Returns OK on the stop message; INVALID_ARGUMENT at start for a shard that does not divide the
// model or a group that disagrees with its layout (or a rank of 0), or later for a plan that does
// not decode or validate; the communicator's error (UNAVAILABLE, DEADLINE_EXCEEDED) when the group
// breaks. Waiting for the next plan has no time limit: an idle replica is not an error, a leader
// that goes away is (its connections close).
//
// Blocks the calling thread for the life of the replica; owns `group` throughout.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "common/model_config.h"
#include "worker/checkpoint.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

// `options` must equal the leader's (see CreateParallelCpuBackend).
absl::Status RunFollower(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
                         const CpuBackendOptions& options, ReplicaGroup group);

}  // namespace reflect
