#include "worker/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/cpu/cpu_model_weights.h"
#include "worker/cpu/matmul.h"
#include "worker/cpu/paged_attention.h"
#include "worker/cpu/paged_kv_cache.h"
#include "worker/cpu/rms_norm.h"
#include "worker/cpu/rope.h"
#include "worker/cpu/thread_pool.h"

namespace reflect {
namespace {

// Positions beyond this are refused before any index arithmetic could overflow.
constexpr int64_t kMaxPosition = int64_t{1} << 40;

// One token of the step: which sequence it belongs to and where it sits.
struct StepToken {
  int64_t sequence = 0;  // index into plan.sequences
  int64_t position = 0;
};

// CpuBackend: the Llama forward pass of DESIGN §6 over a paged KV cache, all tokens of a step
// batched into one [tokens, hidden] matrix for the projections and the MLP.
//
// Ownership: owns packed weights, KV memory, scratch and its thread pool; keeps
// `weights_owner_` alive for in-place embedding reads. Thread-safety: one Forward at a time.
// Cost per step: one pass over the weights (shared by every token) plus attention.
class CpuBackend final : public Backend {
 public:
  CpuBackend(ModelConfig config, int num_threads, std::shared_ptr<const void> weights_owner)
      : config_(std::move(config)),
        pool_(num_threads),
        rope_(config_),
        weights_owner_(std::move(weights_owner)) {}

  absl::Status Initialize(const LlamaWeights& weights, const CpuBackendOptions& options) {
    REFLECT_ASSIGN_OR_RETURN(weights_, cpu::PrepareCpuModelWeights(config_, weights, pool_));
    REFLECT_ASSIGN_OR_RETURN(
        cache_,
        cpu::PagedKvCache::Create(config_.num_hidden_layers, config_.num_key_value_heads,
                                  config_.head_dim, options.num_kv_blocks, options.block_size));
    if (options.num_host_blocks > 0) {
      REFLECT_ASSIGN_OR_RETURN(
          host_cache_,
          cpu::PagedKvCache::Create(config_.num_hidden_layers, config_.num_key_value_heads,
                                    config_.head_dim, options.num_host_blocks, options.block_size));
    }
    attention_scratch_.resize(pool_.num_threads());
    return absl::OkStatus();
  }

  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override;

  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t num_kv_blocks() const override { return cache_.num_blocks(); }
  int64_t block_size() const override { return cache_.block_size(); }

 private:
  absl::Status Validate(const StepPlan& plan) const;
  absl::Status ValidateSwaps(const std::vector<BlockSwap>& swaps, const char* direction) const;
  // swap_out, block_copies, swap_in: the order of scheduler/step_plan.h.
  void ApplyBlockOperations(const StepPlan& plan);
  void RunLayer(const StepPlan& plan, int64_t layer);
  void RotateAndStore(const StepPlan& plan, int64_t layer);
  void Attend(const StepPlan& plan, int64_t layer);
  void NormalizeRows(const float* input, const std::vector<float>& weight, int64_t rows,
                     float* output);

  int64_t query_width() const { return config_.num_attention_heads * config_.head_dim; }
  int64_t kv_width() const { return config_.num_key_value_heads * config_.head_dim; }
  int64_t qkv_width() const { return query_width() + 2 * kv_width(); }

  ModelConfig config_;
  cpu::ThreadPool pool_;
  cpu::Rope rope_;
  std::shared_ptr<const void> weights_owner_;
  cpu::CpuModelWeights weights_;
  cpu::PagedKvCache cache_;
  std::optional<cpu::PagedKvCache> host_cache_;  // swap space; absent with 0 host blocks

  // Per-step scratch, kept between steps to avoid reallocation.
  std::vector<StepToken> tokens_;
  std::vector<float> angles_;      // [tokens, head_dim]: cos then sin per token
  std::vector<float> hidden_;      // [tokens, hidden] residual stream
  std::vector<float> normalized_;  // [tokens, hidden]
  std::vector<float> qkv_;         // [tokens, qkv_width]
  std::vector<float> attention_;   // [tokens, query_width]
  std::vector<float> mlp_;         // [tokens, intermediate]
  std::vector<float> final_;       // [logit rows, hidden]
  std::vector<uint16_t> matmul_scratch_;
  std::vector<std::vector<float>> attention_scratch_;  // per thread
};

absl::Status CpuBackend::ValidateSwaps(const std::vector<BlockSwap>& swaps,
                                       const char* direction) const {
  const int64_t num_blocks = cache_.num_blocks();
  const int64_t num_host_blocks = host_cache_.has_value() ? host_cache_->num_blocks() : 0;
  for (const BlockSwap& swap : swaps) {
    if (swap.device_block < 0 || swap.device_block >= num_blocks || swap.host_block < 0 ||
        swap.host_block >= num_host_blocks) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s of device block %d / host block %d: ids must be in [0, %d) and [0, %d)", direction,
          swap.device_block, swap.host_block, num_blocks, num_host_blocks));
    }
  }
  return absl::OkStatus();
}

void CpuBackend::ApplyBlockOperations(const StepPlan& plan) {
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

absl::Status CpuBackend::Validate(const StepPlan& plan) const {
  REFLECT_RETURN_IF_ERROR(ValidateSwaps(plan.swap_out, "swap-out"));
  REFLECT_RETURN_IF_ERROR(ValidateSwaps(plan.swap_in, "swap-in"));
  const int64_t num_blocks = cache_.num_blocks();
  for (const BlockCopy& copy : plan.block_copies) {
    if (copy.source_block < 0 || copy.source_block >= num_blocks || copy.destination_block < 0 ||
        copy.destination_block >= num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrFormat("block copy %d -> %d: block ids must be in [0, %d)", copy.source_block,
                          copy.destination_block, num_blocks));
    }
  }
  for (const ScheduledSequence& sequence : plan.sequences) {
    if (sequence.token_ids.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d: no tokens to run", sequence.sequence_id));
    }
    if (sequence.start_position < 0 || sequence.start_position > kMaxPosition) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d: start_position %d out of range", sequence.sequence_id,
                          sequence.start_position));
    }
    for (const int32_t token : sequence.token_ids) {
      if (token < 0 || token >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("sequence %d: token id %d outside the vocabulary [0, %d)",
                            sequence.sequence_id, token, config_.vocab_size));
      }
    }
    const int64_t end = sequence.start_position + static_cast<int64_t>(sequence.token_ids.size());
    const int64_t blocks_needed = (end + cache_.block_size() - 1) / cache_.block_size();
    if (static_cast<int64_t>(sequence.block_table.size()) < blocks_needed) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d: block table has %d blocks, positions up to %d need %d",
                          sequence.sequence_id, sequence.block_table.size(), end, blocks_needed));
    }
    for (int64_t index = 0; index < blocks_needed; ++index) {
      const int32_t block = sequence.block_table[index];
      if (block < 0 || block >= num_blocks) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "sequence %d: block id %d outside [0, %d)", sequence.sequence_id, block, num_blocks));
      }
    }
  }
  return absl::OkStatus();
}

void CpuBackend::NormalizeRows(const float* input, const std::vector<float>& weight, int64_t rows,
                               float* output) {
  const int64_t hidden = config_.hidden_size;
  const float epsilon = static_cast<float>(config_.rms_norm_eps);
  pool_.ParallelFor(rows, [&](int64_t row, int) {
    cpu::RmsNormRow(input + row * hidden, weight.data(), hidden, epsilon, output + row * hidden);
  });
}

void CpuBackend::RotateAndStore(const StepPlan& plan, int64_t layer) {
  const int64_t head_dim = config_.head_dim;
  const int64_t block_size = cache_.block_size();
  pool_.ParallelFor(static_cast<int64_t>(tokens_.size()), [&](int64_t token, int) {
    const StepToken& step_token = tokens_[token];
    const float* angles = angles_.data() + token * head_dim;
    float* row = qkv_.data() + token * qkv_width();
    for (int64_t head = 0; head < config_.num_attention_heads + config_.num_key_value_heads;
         ++head) {
      rope_.Rotate(angles, row + head * head_dim);
    }
    const ScheduledSequence& sequence = plan.sequences[step_token.sequence];
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

void CpuBackend::Attend(const StepPlan& plan, int64_t layer) {
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t group_size = config_.num_attention_heads / kv_heads;
  const int64_t head_dim = config_.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t num_tasks = static_cast<int64_t>(tokens_.size()) * kv_heads;
  pool_.ParallelFor(num_tasks, [&](int64_t task, int thread) {
    const int64_t token = task / kv_heads;
    const int64_t kv_head = task % kv_heads;
    const StepToken& step_token = tokens_[token];
    cpu::AttentionGroup group;
    group.layer = layer;
    group.kv_head = kv_head;
    group.position = step_token.position;
    group.block_table = plan.sequences[step_token.sequence].block_table.data();
    group.queries = qkv_.data() + token * qkv_width() + kv_head * group_size * head_dim;
    group.group_size = group_size;
    group.scale = scale;
    cpu::AttendGroup(cache_, group, attention_scratch_[thread].data(),
                     attention_.data() + token * query_width() + kv_head * group_size * head_dim);
  });
}

void CpuBackend::RunLayer(const StepPlan& plan, int64_t layer) {
  const cpu::CpuLayerWeights& weights = weights_.layers[layer];
  const int64_t rows = static_cast<int64_t>(tokens_.size());
  const int64_t hidden = config_.hidden_size;
  NormalizeRows(hidden_.data(), weights.input_norm, rows, normalized_.data());
  cpu::Matmul(normalized_.data(), rows, hidden, weights.qkv, cpu::MatmulOutput::kStore, qkv_.data(),
              qkv_width(), pool_, matmul_scratch_);
  RotateAndStore(plan, layer);
  Attend(plan, layer);
  cpu::Matmul(attention_.data(), rows, query_width(), weights.output,
              cpu::MatmulOutput::kAccumulate, hidden_.data(), hidden, pool_, matmul_scratch_);
  NormalizeRows(hidden_.data(), weights.post_attention_norm, rows, normalized_.data());
  cpu::Matmul(normalized_.data(), rows, hidden, weights.gate_up, cpu::MatmulOutput::kSwiGlu,
              mlp_.data(), config_.intermediate_size, pool_, matmul_scratch_);
  cpu::Matmul(mlp_.data(), rows, config_.intermediate_size, weights.down,
              cpu::MatmulOutput::kAccumulate, hidden_.data(), hidden, pool_, matmul_scratch_);
}

absl::Status CpuBackend::Forward(const StepPlan& plan, std::vector<float>& logits) {
  REFLECT_RETURN_IF_ERROR(Validate(plan));
  ApplyBlockOperations(plan);
  tokens_.clear();
  std::vector<int64_t> logit_rows;
  int64_t max_position = 0;
  for (size_t index = 0; index < plan.sequences.size(); ++index) {
    const ScheduledSequence& sequence = plan.sequences[index];
    for (size_t offset = 0; offset < sequence.token_ids.size(); ++offset) {
      tokens_.push_back(
          {static_cast<int64_t>(index), sequence.start_position + static_cast<int64_t>(offset)});
      max_position = std::max(max_position, tokens_.back().position);
    }
    if (sequence.needs_logits) logit_rows.push_back(static_cast<int64_t>(tokens_.size()) - 1);
  }
  const int64_t rows = static_cast<int64_t>(tokens_.size());
  const int64_t hidden = config_.hidden_size;
  const int64_t head_dim = config_.head_dim;
  angles_.resize(rows * head_dim);
  hidden_.resize(rows * hidden);
  normalized_.resize(rows * hidden);
  qkv_.resize(rows * qkv_width());
  attention_.resize(rows * query_width());
  mlp_.resize(rows * config_.intermediate_size);
  const int64_t scratch_size = cpu::AttentionScratchSize(
      max_position, cache_.block_size(), config_.num_attention_heads / config_.num_key_value_heads);
  for (std::vector<float>& scratch : attention_scratch_) {
    if (static_cast<int64_t>(scratch.size()) < scratch_size) scratch.resize(scratch_size);
  }

  pool_.ParallelFor(rows, [&](int64_t row, int) {
    const StepToken& token = tokens_[row];
    rope_.Angles(token.position, angles_.data() + row * head_dim);
    const int32_t token_id =
        plan.sequences[token.sequence]
            .token_ids[token.position - plan.sequences[token.sequence].start_position];
    cpu::EmbeddingRow(weights_.embedding, token_id, hidden_.data() + row * hidden);
  });
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) RunLayer(plan, layer);

  const int64_t logit_count = static_cast<int64_t>(logit_rows.size());
  final_.resize(logit_count * hidden);
  pool_.ParallelFor(logit_count, [&](int64_t index, int) {
    cpu::RmsNormRow(hidden_.data() + logit_rows[index] * hidden, weights_.final_norm.data(), hidden,
                    static_cast<float>(config_.rms_norm_eps), final_.data() + index * hidden);
  });
  logits.resize(logit_count * config_.vocab_size);
  cpu::Matmul(final_.data(), logit_count, hidden, weights_.lm_head, cpu::MatmulOutput::kStore,
              logits.data(), config_.vocab_size, pool_, matmul_scratch_);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackendFromWeights(
    const ModelConfig& config, const LlamaWeights& weights, const CpuBackendOptions& options,
    std::shared_ptr<const void> weights_owner) {
  if (options.num_kv_blocks <= 0 || options.block_size <= 0 || options.num_host_blocks < 0) {
    return absl::InvalidArgumentError(
        "CPU backend: num_kv_blocks and block_size must be positive, num_host_blocks not "
        "negative");
  }
  REFLECT_RETURN_IF_ERROR(cpu::ValidateLlamaWeights(config, weights));
  auto backend =
      std::make_unique<CpuBackend>(config, options.num_threads, std::move(weights_owner));
  REFLECT_RETURN_IF_ERROR(backend->Initialize(weights, options));
  return backend;
}

}  // namespace reflect
