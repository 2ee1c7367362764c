#include "worker/parallel/thread_replica.h"

#include <utility>

#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/follower.h"
#include "worker/parallel/in_process_store.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect {

ThreadReplica::ThreadReplica(std::shared_ptr<const Checkpoint> checkpoint,
                             const ModelConfig& config, int tensor_parallel, int pipeline_parallel,
                             const CpuBackendOptions& options, const GlooOptions& gloo_options) {
  auto store = std::make_shared<InProcessStore>();
  const auto layout = [&](int rank) {
    ParallelLayout result;
    result.tensor_parallel = tensor_parallel;
    result.pipeline_parallel = pipeline_parallel;
    result.rank = rank;
    return result;
  };
  const int world_size = tensor_parallel * pipeline_parallel;
  follower_status_.resize(world_size);
  // Joining is collective: the followers join on their threads while rank 0 joins here.
  for (int rank = 1; rank < world_size; ++rank) {
    threads_.emplace_back([this, store, checkpoint, config, options, gloo_options, rank,
                           follower_layout = layout(rank)] {
      absl::StatusOr<ReplicaGroup> group =
          JoinReplicaGroup(store, follower_layout, CommunicatorKind::kGloo, gloo_options);
      follower_status_[rank] =
          group.ok() ? RunFollower(checkpoint, config, options, std::move(*group)) : group.status();
    });
  }
  absl::StatusOr<ReplicaGroup> group =
      JoinReplicaGroup(store, layout(0), CommunicatorKind::kGloo, gloo_options);
  if (!group.ok()) {
    leader_ = group.status();
    return;
  }
  leader_ = CreateParallelCpuBackend(std::move(checkpoint), config, options, std::move(*group));
}

ThreadReplica::~ThreadReplica() { JoinFollowers(); }

std::vector<absl::Status> ThreadReplica::JoinFollowers() {
  if (leader_.ok()) leader_->reset();  // its destructor stops the followers
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  std::vector<absl::Status> statuses;
  if (!follower_status_.empty())
    statuses.assign(follower_status_.begin() + 1, follower_status_.end());
  follower_status_.clear();
  return statuses;
}

}  // namespace reflect
