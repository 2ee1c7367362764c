#include "worker/parallel/parallel_backend.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

class ParallelCpuBackend final : public ParallelBackend {
 public:
  explicit ParallelCpuBackend(std::unique_ptr<ParallelRank> rank) : rank_(std::move(rank)) {}
  ~ParallelCpuBackend() override { Shutdown().IgnoreError(); }

  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override {
    if (stopped_) return absl::FailedPreconditionError("parallel backend: shut down");
    const absl::Time start = absl::Now();
    REFLECT_RETURN_IF_ERROR(rank_->Validate(plan));
    REFLECT_RETURN_IF_ERROR(rank_->SendPlan(plan));
    const double plan_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    REFLECT_RETURN_IF_ERROR(rank_->Run(plan, &logits));
    stats_ = rank_->last_step_stats();
    stats_.pipeline_wait_seconds += plan_seconds;
    stats_.forward_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return absl::OkStatus();
  }

  absl::Status Shutdown() override {
    if (stopped_) return absl::OkStatus();
    stopped_ = true;
    return rank_->SendStop();
  }

  ParallelStepStats last_step_stats() const override { return stats_; }
  int64_t vocab_size() const override { return rank_->vocab_size(); }
  int64_t num_kv_blocks() const override { return rank_->num_kv_blocks(); }
  int64_t block_size() const override { return rank_->block_size(); }

 private:
  std::unique_ptr<ParallelRank> rank_;
  ParallelStepStats stats_;
  bool stopped_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ParallelBackend>> CreateParallelCpuBackend(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const CpuBackendOptions& options, ReplicaGroup group) {
  if (!group.layout.is_leader()) {
    return absl::InvalidArgumentError("CreateParallelCpuBackend: only rank 0 leads a replica");
  }
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<ParallelRank> rank,
      ParallelRank::Create(std::move(checkpoint), config, options, std::move(group)));
  return std::make_unique<ParallelCpuBackend>(std::move(rank));
}

}  // namespace reflect
