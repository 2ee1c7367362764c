#include "worker/cpu/cpu_stage.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/cpu/matmul.h"
#include "worker/cpu/paged_attention.h"
#include "worker/cpu/rms_norm.h"
#include "worker/step_plan_checks.h"

namespace reflect::cpu {
namespace {

// Positions from this on are refused before any index arithmetic could overflow.
constexpr int64_t kMaxPosition = int64_t{1} << 40;

}  // namespace

CpuStage::CpuStage(const ShardedModel& model, const CpuBackendOptions& options,
                   Communicator* tensor, std::shared_ptr<const void> weights_owner)
    : config_(model.config),
      full_vocab_size_(model.full_vocab_size),
      vocab_begin_(model.vocab_begin),
      tensor_(tensor != nullptr && tensor->size() > 1 ? tensor : nullptr),
      pool_(options.num_threads),
      rope_(config_),
      weights_owner_(std::move(weights_owner)) {}

absl::StatusOr<std::unique_ptr<CpuStage>> CpuStage::Create(
    const ShardedModel& model, const CpuBackendOptions& options, Communicator* tensor,
    std::shared_ptr<const void> weights_owner) {
  if (options.num_kv_blocks <= 0 || options.block_size <= 0 || options.num_host_blocks < 0) {
    return absl::InvalidArgumentError(
        "CPU backend: num_kv_blocks and block_size must be positive, num_host_blocks not "
        "negative");
  }
  std::unique_ptr<CpuStage> stage(new CpuStage(model, options, tensor, std::move(weights_owner)));
  const ModelConfig& config = stage->config_;
  REFLECT_ASSIGN_OR_RETURN(stage->weights_, PrepareCpuModelWeights(model, stage->pool_));
  REFLECT_ASSIGN_OR_RETURN(
      stage->cache_,
      PagedKvCache::Create(config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
                           options.num_kv_blocks, options.block_size));
  if (options.num_host_blocks > 0) {
    REFLECT_ASSIGN_OR_RETURN(
        stage->host_cache_,
        PagedKvCache::Create(config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
                             options.num_host_blocks, options.block_size));
  }
  stage->attention_scratch_.resize(stage->pool_.num_threads());
  return stage;
}

void CpuStage::ApplyBlockOperations(const StepPlan& plan) {
  for (const BlockSwap& swap : plan.swap_out) {
    host_cache_->CopyBlockFrom(cache_, swap.device_block, swap.host_block);
  }
  for (const BlockCopy& copy : plan.block_copies) {
    cache_.CopyBlock(copy.source_block, copy.destination_block);
  }
  for (const BlockSwap& swap : plan.swap_in) {
    cache_.CopyBlockFrom(*host_cache_, swap.host_block, swap.device_block);
  }
}

absl::Status CpuStage::Validate(const StepPlan& plan) const {
  StepLimits limits;
  limits.vocab_size = full_vocab_size_;
  limits.num_kv_blocks = cache_.num_blocks();
  limits.num_host_blocks = host_cache_.has_value() ? host_cache_->num_blocks() : 0;
  limits.block_size = cache_.block_size();
  limits.max_tokens = std::numeric_limits<int64_t>::max();  // scratch grows with the batch
  limits.max_sequences = std::numeric_limits<int64_t>::max();
  limits.max_context = kMaxPosition;
  return ValidateStepPlan(plan, limits);
}

void CpuStage::BeginBatch(std::span<const ScheduledSequence> sequences) {
  batch_ = sequences;
  tokens_.clear();
  logit_rows_.clear();
  int64_t max_position = 0;
  for (size_t index = 0; index < sequences.size(); ++index) {
    const ScheduledSequence& sequence = sequences[index];
    for (size_t offset = 0; offset < sequence.token_ids.size(); ++offset) {
      tokens_.push_back(
          {static_cast<int64_t>(index), sequence.start_position + static_cast<int64_t>(offset)});
      max_position = std::max(max_position, tokens_.back().position);
    }
    if (sequence.needs_logits) logit_rows_.push_back(rows() - 1);
  }
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  angles_.resize(rows() * head_dim);
  hidden_.resize(rows() * hidden);
  normalized_.resize(rows() * hidden);
  qkv_.resize(rows() * qkv_width());
  attention_.resize(rows() * query_width());
  mlp_.resize(rows() * config_.intermediate_size);
  if (tensor_ != nullptr) partial_.resize(rows() * hidden);
  const int64_t scratch_size = AttentionScratchSize(
      max_position, cache_.block_size(), config_.num_attention_heads / config_.num_key_value_heads);
  for (std::vector<float>& scratch : attention_scratch_) {
    if (static_cast<int64_t>(scratch.size()) < scratch_size) scratch.resize(scratch_size);
  }
  pool_.ParallelFor(rows(), [&](int64_t row, int) {
    rope_.Angles(tokens_[row].position, angles_.data() + row * head_dim);
  });
}

absl::Status CpuStage::Embed() {
  const int64_t hidden = config_.hidden_size;
  pool_.ParallelFor(rows(), [&](int64_t row, int) {
    const StepToken& token = tokens_[row];
    const ScheduledSequence& sequence = batch_[token.sequence];
    const int64_t local =
        sequence.token_ids[token.position - sequence.start_position] - vocab_begin_;
    float* output = hidden_.data() + row * hidden;
    if (local >= 0 && local < config_.vocab_size) {
      EmbeddingRow(weights_.embedding, local, output);
    } else {
      std::fill(output, output + hidden, 0.0f);  // another rank's row
    }
  });
  return AllReduce(hidden_.data(), rows() * hidden);
}

absl::Status CpuStage::RunLayers() {
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    REFLECT_RETURN_IF_ERROR(RunLayer(layer));
  }
  return absl::OkStatus();
}

void CpuStage::ComputeLogits(float* logits) {
  const int64_t hidden = config_.hidden_size;
  final_.resize(logit_rows() * hidden);
  pool_.ParallelFor(logit_rows(), [&](int64_t index, int) {
    RmsNormRow(hidden_.data() + logit_rows_[index] * hidden, weights_.final_norm.data(), hidden,
               static_cast<float>(config_.rms_norm_eps), final_.data() + index * hidden);
  });
  Matmul(final_.data(), logit_rows(), hidden, weights_.lm_head, MatmulOutput::kStore, logits,
         config_.vocab_size, pool_, matmul_scratch_);
}

double CpuStage::TakeAllReduceSeconds() { return std::exchange(allreduce_seconds_, 0.0); }

void CpuStage::NormalizeRows(const float* input, const std::vector<float>& weight, int64_t rows,
                             float* output) {
  const int64_t hidden = config_.hidden_size;
  const float epsilon = static_cast<float>(config_.rms_norm_eps);
  pool_.ParallelFor(rows, [&](int64_t row, int) {
    RmsNormRow(input + row * hidden, weight.data(), hidden, epsilon, output + row * hidden);
  });
}

void CpuStage::RotateAndStore(int64_t layer) {
  const int64_t head_dim = config_.head_dim;
  const int64_t block_size = cache_.block_size();
  pool_.ParallelFor(rows(), [&](int64_t token, int) {
    const StepToken& step_token = tokens_[token];
    const float* angles = angles_.data() + token * head_dim;
    float* row = qkv_.data() + token * qkv_width();
    for (int64_t head = 0; head < config_.num_attention_heads + config_.num_key_value_heads;
         ++head) {
      rope_.Rotate(angles, row + head * head_dim);
    }
    const ScheduledSequence& sequence = batch_[step_token.sequence];
    const int64_t block = sequence.block_table[step_token.position / block_size];
    const int64_t slot = step_token.position % block_size;
    const float* keys = row + query_width();
    const float* values = keys + kv_width();
    for (int64_t kv_head = 0; kv_head < config_.num_key_value_heads; ++kv_head) {
      cache_.Write(layer, block, slot, kv_head, keys + kv_head * head_dim,
                   values + kv_head * head_dim);
    }
  });
}

void CpuStage::Attend(int64_t layer) {
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t group_size = config_.num_attention_heads / kv_heads;
  const int64_t head_dim = config_.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  pool_.ParallelFor(rows() * kv_heads, [&](int64_t task, int thread) {
    const int64_t token = task / kv_heads;
    const int64_t kv_head = task % kv_heads;
    const StepToken& step_token = tokens_[token];
    AttentionGroup group;
    group.layer = layer;
    group.kv_head = kv_head;
    group.position = step_token.position;
    group.block_table = batch_[step_token.sequence].block_table.data();
    group.queries = qkv_.data() + token * qkv_width() + kv_head * group_size * head_dim;
    group.group_size = group_size;
    group.scale = scale;
    AttendGroup(cache_, group, attention_scratch_[thread].data(),
                attention_.data() + token * query_width() + kv_head * group_size * head_dim);
  });
}

absl::Status CpuStage::AllReduce(float* data, int64_t count) {
  if (tensor_ == nullptr) return absl::OkStatus();
  const absl::Time start = absl::Now();
  absl::Status status = tensor_->AllReduceSum(data, count);
  allreduce_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
  return status;
}

absl::Status CpuStage::AddRowParallel(const float* input, int64_t input_width,
                                      const PackedMatrix& weight) {
  const int64_t hidden = config_.hidden_size;
  if (tensor_ == nullptr) {
    Matmul(input, rows(), input_width, weight, MatmulOutput::kAccumulate, hidden_.data(), hidden,
           pool_, matmul_scratch_);
    return absl::OkStatus();
  }
  Matmul(input, rows(), input_width, weight, MatmulOutput::kStore, partial_.data(), hidden, pool_,
         matmul_scratch_);
  REFLECT_RETURN_IF_ERROR(AllReduce(partial_.data(), rows() * hidden));
  pool_.ParallelFor(rows(), [&](int64_t row, int) {
    float* residual = hidden_.data() + row * hidden;
    const float* sum = partial_.data() + row * hidden;
    for (int64_t index = 0; index < hidden; ++index) residual[index] += sum[index];
  });
  return absl::OkStatus();
}

absl::Status CpuStage::RunLayer(int64_t layer) {
  const CpuLayerWeights& weights = weights_.layers[layer];
  const int64_t hidden = config_.hidden_size;
  NormalizeRows(hidden_.data(), weights.input_norm, rows(), normalized_.data());
  Matmul(normalized_.data(), rows(), hidden, weights.qkv, MatmulOutput::kStore, qkv_.data(),
         qkv_width(), pool_, matmul_scratch_);
  RotateAndStore(layer);
  Attend(layer);
  REFLECT_RETURN_IF_ERROR(AddRowParallel(attention_.data(), query_width(), weights.output));
  NormalizeRows(hidden_.data(), weights.post_attention_norm, rows(), normalized_.data());
  Matmul(normalized_.data(), rows(), hidden, weights.gate_up, MatmulOutput::kSwiGlu, mlp_.data(),
         config_.intermediate_size, pool_, matmul_scratch_);
  return AddRowParallel(mlp_.data(), config_.intermediate_size, weights.down);
}

}  // namespace reflect::cpu
