#include "tools/reflect/bench_group.h"

#include <utility>

#include "worker/checkpoint.h"
#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/follower.h"
#include "worker/parallel/in_process_store.h"
#include "worker/parallel/parallel_layout.h"

namespace reflect::cli {

absl::StatusOr<std::unique_ptr<BenchReplica>> BenchReplica::Start(
    const std::string& model_dir, const ModelConfig& config, int tensor_parallel,
    int pipeline_parallel, const CpuBackendOptions& options) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(model_dir);
  if (!opened.ok()) return opened.status();
  const std::shared_ptr<const Checkpoint> checkpoint(std::move(*opened));

  std::unique_ptr<BenchReplica> replica(new BenchReplica());
  auto store = std::make_shared<InProcessStore>();
  const int world_size = tensor_parallel * pipeline_parallel;
  auto layout = [&](int rank) {
    return ParallelLayout{
        .tensor_parallel = tensor_parallel, .pipeline_parallel = pipeline_parallel, .rank = rank};
  };
  replica->follower_status_.resize(world_size);
  // Joining is collective: the followers join on their threads while rank 0 joins here.
  for (int rank = 1; rank < world_size; ++rank) {
    replica->followers_.emplace_back([status = &replica->follower_status_[rank], store, checkpoint,
                                      config, options, follower_layout = layout(rank)] {
      absl::StatusOr<ReplicaGroup> group =
          JoinReplicaGroup(store, follower_layout, CommunicatorKind::kGloo, GlooOptions{});
      *status =
          group.ok() ? RunFollower(checkpoint, config, options, std::move(*group)) : group.status();
    });
  }
  absl::StatusOr<ReplicaGroup> group =
      JoinReplicaGroup(store, layout(0), CommunicatorKind::kGloo, GlooOptions{});
  absl::StatusOr<std::unique_ptr<ParallelBackend>> leader =
      group.ok() ? CreateParallelCpuBackend(checkpoint, config, options, std::move(*group))
                 : absl::StatusOr<std::unique_ptr<ParallelBackend>>(group.status());
  if (!leader.ok()) {
    // Rank 0's group is gone, so its connections are closed and the followers return.
    replica->Stop().IgnoreError();
    return leader.status();
  }
  replica->leader_ = std::move(*leader);
  return replica;
}

BenchReplica::~BenchReplica() { Stop().IgnoreError(); }

absl::Status BenchReplica::Stop() {
  absl::Status status;
  if (leader_ != nullptr) {
    status = leader_->Shutdown();
    leader_.reset();
  }
  for (std::thread& thread : followers_) thread.join();
  followers_.clear();
  for (size_t rank = 1; rank < follower_status_.size() && status.ok(); ++rank) {
    status = follower_status_[rank];
  }
  follower_status_.clear();
  return status;
}

}  // namespace reflect::cli
