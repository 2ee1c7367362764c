#include "worker/parallel/follower.h"

#include <optional>
#include <utility>

#include "common/status_macros.h"
#include "worker/parallel/parallel_rank.h"

namespace reflect {

absl::Status RunFollower(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
                         const CpuBackendOptions& options, ReplicaGroup group) {
  if (group.layout.is_leader()) {
    return absl::InvalidArgumentError("RunFollower: rank 0 is the leader");
  }
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<ParallelRank> rank,
      ParallelRank::Create(std::move(checkpoint), config, options, std::move(group)));
  while (true) {
    REFLECT_ASSIGN_OR_RETURN(std::optional<StepPlan> plan, rank->ReceivePlan());
    if (!plan.has_value()) return absl::OkStatus();
    REFLECT_RETURN_IF_ERROR(rank->Validate(*plan));
    REFLECT_RETURN_IF_ERROR(rank->Run(*plan, nullptr));
  }
}

}  // namespace reflect
