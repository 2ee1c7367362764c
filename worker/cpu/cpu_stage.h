// CpuStage: the Llama forward pass (DESIGN §6) over one rank's shard — the layers of its pipeline
// stage, its attention heads, MLP slice and vocabulary rows — on the CPU, with a paged KV cache
// holding only its KV heads and its layers. The single-rank backend is the stage of the whole
// model; the parallel backend drives one per rank.
//
// A step runs as: Validate, ApplyBlockOperations, then per batch of consecutive sequences (the
// whole plan, or one pipeline micro-batch) BeginBatch, Embed (first stage) or filling hidden()
// with the previous stage's activations, RunLayers, then ComputeLogits (last stage) or sending
// hidden() on. All tokens of a batch form one [tokens, hidden] matrix for the projections.
//
// Tensor parallelism: o_proj and down_proj give partial sums that are all-reduced over `tensor`
// and added to the residual stream; the embedding is looked up in the local vocabulary rows
// (other tokens' rows are zero) and all-reduced. Without a tensor group of more than one rank the
// partial sums go straight into the residual stream, exactly as the single-rank backend always
// did. Every rank of a tensor group calls the same methods with the same plan.
//
// Batch invariance: a row's results are bit-identical in any batch (cpu_backend.h), and the
// all-reduce sums in a fixed rank order, so they are with tensor parallelism too.
//
// Ownership: owns packed weights, KV memory, scratch and its thread pool; keeps `weights_owner`
// alive for in-place embedding reads; `tensor` is borrowed and must outlive the stage.
// Thread-safety: one caller at a time. Cost per batch: one pass over the shard's weights plus
// attention, plus two all-reduces of [tokens, hidden] floats per layer with tensor parallelism.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/step_plan.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/cpu/cpu_model_weights.h"
#include "worker/cpu/paged_kv_cache.h"
#include "worker/cpu/rope.h"
#include "worker/cpu/thread_pool.h"
#include "worker/model_shard.h"
#include "worker/parallel/communicator.h"

namespace reflect::cpu {

class CpuStage {
 public:
  // `tensor`: the rank's tensor group, or null for none. INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<CpuStage>> Create(
      const ShardedModel& model, const CpuBackendOptions& options, Communicator* tensor,
      std::shared_ptr<const void> weights_owner);

  // Checks block ids, token ids (against the whole vocabulary), positions (below 2^40) and
  // block tables: ValidateStepPlan (worker/step_plan_checks.h) with this stage's limits.
  absl::Status Validate(const StepPlan& plan) const;
  // swap_out, block_copies, swap_in: the order of scheduler/step_plan.h; on a validated plan.
  void ApplyBlockOperations(const StepPlan& plan);

  // Makes `sequences` (consecutive sequences of a validated plan, alive until the batch is done)
  // the current batch: sizes the scratch and computes the RoPE angles.
  void BeginBatch(std::span<const ScheduledSequence> sequences);
  int64_t rows() const { return static_cast<int64_t>(tokens_.size()); }
  int64_t logit_rows() const { return static_cast<int64_t>(logit_rows_.size()); }
  // The batch's residual stream, [rows(), hidden] row-major.
  float* hidden() { return hidden_.data(); }

  // First stage: the token embeddings into hidden().
  absl::Status Embed();
  // Runs the stage's layers over hidden(), writing the batch's K/V into the cache.
  absl::Status RunLayers();
  // Last stage: the final norm and the local LM head rows of every sequence needing logits:
  // [logit_rows(), vocab rows] into `logits`.
  void ComputeLogits(float* logits);

  int64_t num_kv_blocks() const { return cache_.num_blocks(); }
  int64_t block_size() const { return cache_.block_size(); }
  // Seconds spent in all-reduce since the last call.
  double TakeAllReduceSeconds();

 private:
  struct StepToken {
    int64_t sequence = 0;  // index into the batch
    int64_t position = 0;
  };

  CpuStage(const ShardedModel& model, const CpuBackendOptions& options, Communicator* tensor,
           std::shared_ptr<const void> weights_owner);

  absl::Status RunLayer(int64_t layer);
  void RotateAndStore(int64_t layer);
  void Attend(int64_t layer);
  void NormalizeRows(const float* input, const std::vector<float>& weight, int64_t rows,
                     float* output);
  // hidden += input · weightᵀ summed over the tensor group (a row-parallel projection).
  absl::Status AddRowParallel(const float* input, int64_t input_width, const PackedMatrix& weight);
  absl::Status AllReduce(float* data, int64_t count);

  int64_t query_width() const { return config_.num_attention_heads * config_.head_dim; }
  int64_t kv_width() const { return config_.num_key_value_heads * config_.head_dim; }
  int64_t qkv_width() const { return query_width() + 2 * kv_width(); }

  const ModelConfig config_;  // the shard's sizes
  const int64_t full_vocab_size_;
  const int64_t vocab_begin_;
  Communicator* const tensor_;  // null unless the tensor group has more than one rank
  ThreadPool pool_;
  Rope rope_;
  std::shared_ptr<const void> weights_owner_;
  CpuModelWeights weights_;
  PagedKvCache cache_;
  std::optional<PagedKvCache> host_cache_;  // swap space; absent with 0 host blocks
  double allreduce_seconds_ = 0.0;

  // The current batch and its scratch, kept between steps to avoid reallocation.
  std::span<const ScheduledSequence> batch_;
  std::vector<StepToken> tokens_;
  std::vector<int64_t> logit_rows_;  // the row of each needs_logits sequence's last token
  std::vector<float> angles_;        // [tokens, head_dim]: cos then sin per token
  std::vector<float> hidden_;        // [tokens, hidden] residual stream
  std::vector<float> normalized_;    // [tokens, hidden]
  std::vector<float> qkv_;           // [tokens, qkv_width]
  std::vector<float> attention_;     // [tokens, query_width]
  std::vector<float> mlp_;           // [tokens, intermediate]
  std::vector<float> partial_;       // [tokens, hidden] row-parallel partial sums
  std::vector<float> final_;         // [logit rows, hidden]
  std::vector<uint16_t> matmul_scratch_;
  std::vector<std::vector<float>> attention_scratch_;  // per thread
};

}  // namespace reflect::cpu
