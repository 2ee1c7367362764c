#include "worker/parallel/parallel_rank.h"

#include <algorithm>
#include <cstring>
#include <span>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/cpu/cpu_model_weights.h"
#include "worker/llama_weights.h"
#include "worker/model_shard.h"
#include "worker/parallel/step_plan_codec.h"

namespace reflect {
namespace {

// A plan larger than this is a corrupt size word, not a step.
constexpr int64_t kMaxPlanBytes = int64_t{1} << 30;

absl::Status CheckGroup(const ReplicaGroup& group) {
  const ParallelLayout& layout = group.layout;
  if (group.world == nullptr || group.tensor == nullptr) {
    return absl::InvalidArgumentError("replica group: missing world or tensor communicator");
  }
  if (layout.tensor_parallel < 1 || layout.pipeline_parallel < 1 || layout.rank < 0 ||
      layout.rank >= layout.world_size() || group.world->size() != layout.world_size() ||
      group.world->rank() != layout.rank || group.tensor->size() != layout.tensor_parallel ||
      group.tensor->rank() != layout.tp_rank()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "replica group: layout TP %d × PP %d rank %d, but world rank %d of %d and tensor rank "
        "%d of %d",
        layout.tensor_parallel, layout.pipeline_parallel, layout.rank, group.world->rank(),
        group.world->size(), group.tensor->rank(), group.tensor->size()));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<size_t> MicroBatchBounds(const StepPlan& plan, int pipeline_parallel) {
  const size_t sequences = plan.sequences.size();
  const size_t count = std::min<size_t>(std::max(pipeline_parallel, 1), sequences);
  auto tokens = [&](size_t index) {
    return static_cast<int64_t>(plan.sequences[index].token_ids.size());
  };
  int64_t total = 0;
  for (size_t index = 0; index < sequences; ++index) total += tokens(index);
  std::vector<size_t> bounds = {0};
  int64_t prefix = 0;
  size_t index = 0;
  for (size_t batch = 1; batch < count; ++batch) {
    // Take sequences while at least half of the next one falls within this micro-batch's share
    // of the tokens, keeping one sequence for each later micro-batch.
    const int64_t target = total * static_cast<int64_t>(batch) / static_cast<int64_t>(count);
    prefix += tokens(index++);
    while (sequences - index > count - batch && 2 * prefix + tokens(index) <= 2 * target) {
      prefix += tokens(index++);
    }
    bounds.push_back(index);
  }
  if (count > 0) bounds.push_back(sequences);
  return bounds;
}

ParallelRank::ParallelRank(ReplicaGroup group, std::unique_ptr<cpu::CpuStage> stage,
                           int64_t hidden_size, int64_t vocab_size)
    : group_(std::move(group)),
      stage_(std::move(stage)),
      hidden_size_(hidden_size),
      vocab_size_(vocab_size) {}

absl::StatusOr<std::unique_ptr<ParallelRank>> ParallelRank::Create(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const CpuBackendOptions& options, ReplicaGroup group) {
  if (checkpoint == nullptr) return absl::InvalidArgumentError("parallel rank: no checkpoint");
  REFLECT_RETURN_IF_ERROR(CheckGroup(group));
  REFLECT_ASSIGN_OR_RETURN(const LlamaWeights weights, LoadLlamaWeights(*checkpoint, config));
  REFLECT_RETURN_IF_ERROR(cpu::ValidateLlamaWeights(config, weights));
  REFLECT_ASSIGN_OR_RETURN(const ShardedModel model,
                           ShardModel(config, weights, ShardOf(group.layout, config)));
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<cpu::CpuStage> stage,
      cpu::CpuStage::Create(model, options, group.tensor.get(), std::move(checkpoint)));
  return std::unique_ptr<ParallelRank>(
      new ParallelRank(std::move(group), std::move(stage), config.hidden_size, config.vocab_size));
}

absl::Status ParallelRank::SendPlan(const StepPlan& plan) {
  if (group_.world->size() == 1) return absl::OkStatus();
  encoded_ = EncodeStepPlan(plan);
  int64_t size = static_cast<int64_t>(encoded_.size());
  REFLECT_RETURN_IF_ERROR(group_.world->Broadcast(&size, sizeof(size), 0, kPeerTimeout));
  return group_.world->Broadcast(encoded_.data(), size, 0, kPeerTimeout);
}

absl::Status ParallelRank::SendStop() {
  if (group_.world->size() == 1) return absl::OkStatus();
  int64_t size = kStopMessage;
  return group_.world->Broadcast(&size, sizeof(size), 0, kPeerTimeout);
}

absl::StatusOr<std::optional<StepPlan>> ParallelRank::ReceivePlan() {
  int64_t size = 0;
  REFLECT_RETURN_IF_ERROR(
      group_.world->Broadcast(&size, sizeof(size), 0, absl::InfiniteDuration()));
  if (size == kStopMessage) return std::nullopt;
  if (size <= 0 || size > kMaxPlanBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("step plan of %d bytes", size));
  }
  encoded_.resize(size);
  REFLECT_RETURN_IF_ERROR(group_.world->Broadcast(encoded_.data(), size, 0, kPeerTimeout));
  REFLECT_ASSIGN_OR_RETURN(StepPlan plan, DecodeStepPlan(encoded_));
  return std::optional<StepPlan>(std::move(plan));
}

absl::Status ParallelRank::Timed(absl::FunctionRef<absl::Status()> call) {
  const absl::Time start = absl::Now();
  absl::Status status = call();
  stats_.pipeline_wait_seconds += absl::ToDoubleSeconds(absl::Now() - start);
  return status;
}

absl::Status ParallelRank::Run(const StepPlan& plan, std::vector<float>* logits) {
  const absl::Time start = absl::Now();
  const ParallelLayout& layout = group_.layout;
  Communicator& world = *group_.world;
  stats_ = {};
  stage_->ApplyBlockOperations(plan);
  bounds_ = MicroBatchBounds(plan, layout.pipeline_parallel);
  const int64_t batches = static_cast<int64_t>(bounds_.size()) - 1;
  if (logits != nullptr) {
    logit_offsets_.assign(1, 0);
    for (int64_t batch = 0; batch < batches; ++batch) {
      const auto first = plan.sequences.begin() + bounds_[batch];
      const auto last = plan.sequences.begin() + bounds_[batch + 1];
      logit_offsets_.push_back(logit_offsets_.back() +
                               std::count_if(first, last, [](const ScheduledSequence& sequence) {
                                 return sequence.needs_logits;
                               }));
    }
    logits->resize(logit_offsets_.back() * vocab_size_);
  }
  const VocabRange vocab = VocabRangeOf(vocab_size_, layout.tensor_parallel, layout.tp_rank());
  const int previous = layout.GlobalRank(layout.stage() - 1, layout.tp_rank());
  const int next = layout.GlobalRank(layout.stage() + 1, layout.tp_rank());
  const int pipeline_depth = layout.pipeline_parallel;
  const std::span<const ScheduledSequence> sequences(plan.sequences);
  int64_t collected = 0;  // micro-batches whose logits the leader holds
  for (int64_t batch = 0; batch < batches; ++batch) {
    stage_->BeginBatch(sequences.subspan(bounds_[batch], bounds_[batch + 1] - bounds_[batch]));
    const int64_t bytes = stage_->rows() * hidden_size_ * static_cast<int64_t>(sizeof(float));
    if (layout.is_first_stage()) {
      REFLECT_RETURN_IF_ERROR(stage_->Embed());
    } else {
      REFLECT_RETURN_IF_ERROR(
          Timed([&] { return world.Recv(stage_->hidden(), bytes, previous, kPeerTimeout); }));
    }
    REFLECT_RETURN_IF_ERROR(stage_->RunLayers());
    if (!layout.is_last_stage()) {
      while (logits != nullptr && collected + pipeline_depth - 1 <= batch) {
        REFLECT_RETURN_IF_ERROR(CollectLogits(collected++, *logits));
      }
      REFLECT_RETURN_IF_ERROR(Timed([&] { return world.Send(stage_->hidden(), bytes, next); }));
      continue;
    }
    shard_.resize(stage_->logit_rows() * (vocab.end - vocab.begin));
    stage_->ComputeLogits(shard_.data());
    if (logits != nullptr) {
      REFLECT_RETURN_IF_ERROR(CollectLogits(collected++, *logits));
    } else if (!shard_.empty()) {
      const int64_t shard_bytes = static_cast<int64_t>(shard_.size() * sizeof(float));
      REFLECT_RETURN_IF_ERROR(Timed([&] { return world.Send(shard_.data(), shard_bytes, 0); }));
    }
  }
  while (logits != nullptr && collected < batches) {
    REFLECT_RETURN_IF_ERROR(CollectLogits(collected++, *logits));
  }
  stats_.allreduce_seconds = stage_->TakeAllReduceSeconds();
  stats_.forward_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status ParallelRank::CollectLogits(int64_t batch, std::vector<float>& logits) {
  const ParallelLayout& layout = group_.layout;
  const int64_t first_row = logit_offsets_[batch];
  const int64_t rows = logit_offsets_[batch + 1] - first_row;
  if (rows == 0) return absl::OkStatus();
  for (int tp_rank = 0; tp_rank < layout.tensor_parallel; ++tp_rank) {
    const VocabRange range = VocabRangeOf(vocab_size_, layout.tensor_parallel, tp_rank);
    const int64_t width = range.end - range.begin;
    const int source = layout.GlobalRank(layout.pipeline_parallel - 1, tp_rank);
    const float* shard = shard_.data();
    if (source != layout.rank) {
      receive_.resize(rows * width);
      const int64_t bytes = static_cast<int64_t>(receive_.size() * sizeof(float));
      REFLECT_RETURN_IF_ERROR(
          Timed([&] { return group_.world->Recv(receive_.data(), bytes, source, kPeerTimeout); }));
      shard = receive_.data();
    }
    for (int64_t row = 0; row < rows; ++row) {
      std::memcpy(logits.data() + (first_row + row) * vocab_size_ + range.begin,
                  shard + row * width, width * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace reflect
