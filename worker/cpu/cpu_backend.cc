#include "worker/cpu/cpu_backend.h"

#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "worker/cpu/cpu_model_weights.h"
#include "worker/cpu/cpu_stage.h"
#include "worker/model_shard.h"

namespace reflect {
namespace {

// CpuBackend: the whole model as one CpuStage (cpu_stage.h), all tokens of a step batched into
// one [tokens, hidden] matrix for the projections and the MLP.
//
// Ownership: owns the stage. Thread-safety: one Forward at a time. Cost per step: one pass over
// the weights (shared by every token) plus attention.
class CpuBackend final : public Backend {
 public:
  CpuBackend(std::unique_ptr<cpu::CpuStage> stage, int64_t vocab_size)
      : stage_(std::move(stage)), vocab_size_(vocab_size) {}

  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override {
    REFLECT_RETURN_IF_ERROR(stage_->Validate(plan));
    stage_->ApplyBlockOperations(plan);
    stage_->BeginBatch(plan.sequences);
    REFLECT_RETURN_IF_ERROR(stage_->Embed());
    REFLECT_RETURN_IF_ERROR(stage_->RunLayers());
    logits.resize(stage_->logit_rows() * vocab_size_);
    stage_->ComputeLogits(logits.data());
    return absl::OkStatus();
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int64_t num_kv_blocks() const override { return stage_->num_kv_blocks(); }
  int64_t block_size() const override { return stage_->block_size(); }

 private:
  std::unique_ptr<cpu::CpuStage> stage_;
  const int64_t vocab_size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackendFromWeights(
    const ModelConfig& config, const LlamaWeights& weights, const CpuBackendOptions& options,
    std::shared_ptr<const void> weights_owner) {
  REFLECT_RETURN_IF_ERROR(cpu::ValidateLlamaWeights(config, weights));
  REFLECT_ASSIGN_OR_RETURN(ShardedModel model, ShardModel(config, weights, WholeModel(config)));
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<cpu::CpuStage> stage,
      cpu::CpuStage::Create(model, options, nullptr, std::move(weights_owner)));
  return std::make_unique<CpuBackend>(std::move(stage), config.vocab_size);
}

}  // namespace reflect
