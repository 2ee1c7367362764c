// CudaBackend, the class behind cuda_backend.h's factories: its creation and memory sizing live in
// cuda_backend.cc, its steps (block operations, the layers, decode graphs) in
// cuda_backend_step.cc. Private to worker/cuda/.
//
// Device memory, in allocation order: the weights (cuda_weights.h); the cuBLASLt workspace; the
// activations for max_tokens_per_step rows — the f32 residual stream, one bf16 buffer for every
// GEMM input (normalized rows, attention output, SwiGLU output, final-norm rows) and one f32
// buffer for every other GEMM output (qkv, gate_up) —; logits for the largest decode bucket; the
// attention scratch; the step metadata; the sampler's buffers; and last the KV pool, every layer's
// keys then values as [blocks][block_size][kv_heads][head_dim] bf16, whose final block is the
// scratch block graph padding writes to (never handed to the scheduler). Unless the options fix
// it, the pool gets floor((gpu_memory_utilization · total − in use − 512 MiB) / block bytes) − 1
// blocks, the 512 MiB kept for what comes later (graphs, lazily loaded kernels, sampler growth).
//
// Ownership, thread-safety: see cuda_backend.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/cuda/cuda_backend.h"
#include "worker/cuda/cuda_backend_metadata.h"
#include "worker/cuda/cuda_gemm.h"
#include "worker/cuda/cuda_ops.h"
#include "worker/cuda/cuda_sampler.h"
#include "worker/cuda/cuda_weights.h"
#include "worker/cuda/device_buffer.h"
#include "worker/llama_weights.h"

namespace reflect::cuda {

// Keys per attention split: 512 rounded up to a multiple of the block size, in every mode.
int64_t KeysPerSplit(int64_t block_size);

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const ModelConfig& config,
                                                             const LlamaWeights& weights,
                                                             const CudaBackendOptions& options);
  ~CudaBackend() override;

  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override;
  absl::Status ForwardAndSample(const StepPlan& plan, std::span<const SamplingRow> rows,
                                std::vector<SampledToken>& tokens) override;

  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t num_kv_blocks() const override { return num_kv_blocks_; }
  int64_t block_size() const override { return options_.block_size; }

 private:
  using GraphKey = std::pair<int64_t, int64_t>;  // (padded rows, max_context)

  CudaBackend(const ModelConfig& config, const CudaBackendOptions& options);

  // cuda_backend.cc: allocations after the weights, then the KV pool.
  absl::Status AllocateWorkingMemory();
  absl::Status AllocateKvPool();
  // INVALID_ARGUMENT when the attention kernels do not support the model's head_dim or GQA group
  // (asked with an empty batch, so an unsupported model fails at load, not at its first step).
  absl::Status CheckAttentionShape();

  // cuda_backend_step.cc. RunStep enqueues everything up to the logits of the plan's rows
  // (logit_rows_ of them at logits_) and leaves the stream running.
  absl::Status RunStep(const StepPlan& plan);
  absl::Status ApplyBlockOperations(const StepPlan& plan);
  absl::Status SwapBlock(int32_t device_block, int32_t host_block, cudaMemcpyKind direction);
  absl::Status RunModel(const StepLayout& layout);
  absl::Status RunLayer(int64_t layer, const AttentionBatch& batch, int64_t max_context);
  absl::Status Attend(int64_t layer, const AttentionBatch& batch, int64_t max_context);
  absl::Status CaptureGraph(const GraphKey& key, const StepLayout& layout);
  // Syncs the stream after a failed step, so no copy still reads the pinned buffers.
  absl::Status Finish(absl::Status status);

  Bf16* key_cache(int64_t layer) const;
  Bf16* value_cache(int64_t layer) const;
  int64_t block_elements() const;  // block_size · kv_heads · head_dim
  int64_t query_width() const { return config_.num_attention_heads * config_.head_dim; }
  int64_t qkv_width() const {
    return query_width() + 2 * config_.num_key_value_heads * config_.head_dim;
  }

  const ModelConfig config_;
  const CudaBackendOptions options_;
  const int64_t keys_per_split_;
  const int64_t token_capacity_;    // rows the activations hold
  const int64_t row_capacity_;      // sequences (and logits rows) per step, graph padding included
  const int64_t context_capacity_;  // ContextBucket of max_position_embeddings
  int64_t num_kv_blocks_ = 0;       // without the scratch block
  int64_t max_copy_pitch_ = 0;      // cudaDevAttrMaxPitch: bounds SwapBlock's 2D copies

  cudaStream_t stream_ = nullptr;
  std::optional<CudaModelWeights> weights_;
  std::unique_ptr<CudaGemm> gemm_;
  std::optional<CudaSampler> sampler_;

  DeviceBuffer<float> residual_;     // [token_capacity, hidden]
  DeviceBuffer<Bf16> gemm_input_;    // [token_capacity, max(hidden, query width, intermediate)]
  DeviceBuffer<float> gemm_output_;  // [token_capacity, max(qkv width, 2·intermediate)]
  DeviceBuffer<float> logits_;       // [row_capacity, vocab]
  DeviceBuffer<float> attention_scratch_;
  PinnedBuffer<int32_t> metadata_host_;  // StepLayout's array, for the largest layout
  DeviceBuffer<int32_t> metadata_;
  PinnedBuffer<int32_t> copies_host_;  // block copies: sources then destinations; grown
  DeviceBuffer<int32_t> copies_;
  DeviceBuffer<Bf16> kv_pool_;        // 2·layers caches of (num_kv_blocks + 1) blocks
  DeviceBuffer<Bf16*> layer_caches_;  // CopyBlocks' [2·layers] cache pointers
  PinnedBuffer<Bf16> host_pool_;      // [host block][2·layers][block elements]

  std::map<GraphKey, cudaGraphExec_t> graphs_;
  int64_t logit_rows_ = 0;  // of the last step
};

}  // namespace reflect::cuda
