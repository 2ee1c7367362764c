#include "worker/parallel/communicator_factory.h"

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/parallel/single_rank_communicator.h"

#ifdef REFLECT_WITH_NCCL
#include "worker/parallel/nccl_communicator.h"
#endif

namespace reflect {

absl::StatusOr<CommunicatorKind> ParseCommunicatorKind(absl::string_view name) {
  if (name == "single") return CommunicatorKind::kSingleRank;
  if (name == "gloo") return CommunicatorKind::kGloo;
  if (name == "nccl") return CommunicatorKind::kNccl;
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown communicator '%s' (single, gloo or nccl)", name));
}

std::string CommunicatorKindName(CommunicatorKind kind) {
  switch (kind) {
    case CommunicatorKind::kSingleRank:
      return "single";
    case CommunicatorKind::kGloo:
      return "gloo";
    case CommunicatorKind::kNccl:
      return "nccl";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateCommunicator(
    CommunicatorKind kind, std::shared_ptr<KeyValueStore> store, const std::string& group_name,
    int rank, int size, const GlooOptions& options) {
  switch (kind) {
    case CommunicatorKind::kSingleRank:
      if (size != 1 || rank != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "group '%s': a single-rank communicator cannot hold %d ranks", group_name, size));
      }
      return std::make_unique<SingleRankCommunicator>();
    case CommunicatorKind::kGloo:
      return CreateGlooCommunicator(std::move(store), group_name, rank, size, options);
    case CommunicatorKind::kNccl:
#ifdef REFLECT_WITH_NCCL
      return CreateNcclCommunicator(std::move(store), group_name, rank, size, options.timeout);
#else
      return absl::FailedPreconditionError(
          absl::StrFormat("group '%s': built without NCCL", group_name));
#endif
  }
  return absl::InvalidArgumentError("unknown communicator kind");
}

absl::StatusOr<ReplicaGroup> JoinReplicaGroup(std::shared_ptr<KeyValueStore> store,
                                              const ParallelLayout& layout,
                                              CommunicatorKind tensor_kind,
                                              const GlooOptions& options) {
  if (layout.tensor_parallel < 1 || layout.pipeline_parallel < 1 || layout.rank < 0 ||
      layout.rank >= layout.world_size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d outside tensor_parallel %d × pipeline_parallel %d", layout.rank,
                        layout.tensor_parallel, layout.pipeline_parallel));
  }
  ReplicaGroup group;
  group.layout = layout;
  const int world_size = layout.world_size();
  REFLECT_ASSIGN_OR_RETURN(
      group.world,
      CreateCommunicator(world_size == 1 ? CommunicatorKind::kSingleRank : CommunicatorKind::kGloo,
                         store, "world", layout.rank, world_size, options));
  REFLECT_ASSIGN_OR_RETURN(
      group.tensor,
      CreateCommunicator(layout.tensor_parallel == 1 ? CommunicatorKind::kSingleRank : tensor_kind,
                         store, absl::StrFormat("tensor/stage%d", layout.stage()), layout.tp_rank(),
                         layout.tensor_parallel, options));
  // A rank that returned while a peer was still connecting its tensor mesh could fail that peer's
  // join by leaving (e.g. on refusing its shard): no rank returns before every rank has joined.
  if (world_size > 1) {
    float joined = 1.0f;
    REFLECT_RETURN_IF_ERROR(group.world->AllReduceSum(&joined, 1));
  }
  return group;
}

}  // namespace reflect
