// Builds communicators by kind, and the communicators of one rank of a replica (DESIGN §1, §3).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/parallel/communicator.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/key_value_store.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

enum class CommunicatorKind { kSingleRank, kGloo, kNccl };

// "single", "gloo" or "nccl"; INVALID_ARGUMENT naming the choices otherwise.
absl::StatusOr<CommunicatorKind> ParseCommunicatorKind(absl::string_view name);
std::string CommunicatorKindName(CommunicatorKind kind);

// Joins group `group_name` (see CreateGlooCommunicator / CreateNcclCommunicator). kSingleRank
// needs size 1; kNccl answers FAILED_PRECONDITION "built without NCCL" in a build without it, and
// uses options.timeout (its hostname is Gloo's only).
absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    CommunicatorKind kind, std::shared_ptr<KeyValueStore> store, const std::string& group_name,
    int rank, int size, const GlooOptions& options);

// The communicators of `layout.rank`: the world group "world" (Gloo; single-rank when the world
// is one rank), then the tensor group "tensor/stage<s>" of its stage (`tensor_kind` over the TP
// ranks of the stage, tensor rank = tp_rank; single-rank when tensor_parallel is 1). Every rank of
// the replica must call it at the same time; it returns once all have joined both groups (a world
// all-reduce at the end), or the first error.
absl::StatusOr<ReplicaGroup> JoinReplicaGroup(std::shared_ptr<KeyValueStore> store,
                                              const ParallelLayout& layout,
                                              CommunicatorKind tensor_kind,
                                              const GlooOptions& options);

}  // namespace reflect
