// CudaBackend's steps: the plan checked and packed (cuda_backend_metadata.h), block operations in
// scheduler/step_plan.h's order, then the forward pass, eagerly or replayed from a decode graph,
// and the logits or the sampled tokens back to the host.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/cuda/cuda_backend_internal.h"
#include "worker/cuda/cuda_status.h"

namespace reflect::cuda {

absl::Status CudaBackend::Forward(const StepPlan& plan, std::vector<float>& logits) {
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
  REFLECT_RETURN_IF_ERROR(Finish(RunStep(plan)));
  logits.resize(logit_rows_ * config_.vocab_size);
  if (!logits.empty()) {
    REFLECT_RETURN_IF_ERROR(Finish(
        CudaStatus(cudaMemcpyAsync(logits.data(), logits_.data(), logits.size() * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_),
                   "copying logits to the host")));
  }
  return Finish(CudaStatus(cudaStreamSynchronize(stream_), "running a step"));
}

absl::Status CudaBackend::ForwardAndSample(const StepPlan& plan, std::span<const SamplingRow> rows,
                                           std::vector<SampledToken>& tokens) {
  tokens.clear();
  REFLECT_RETURN_IF_ERROR(CheckSamplingRows(plan, rows));
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
  REFLECT_RETURN_IF_ERROR(Finish(RunStep(plan)));
  if (rows.empty()) {
    return Finish(CudaStatus(cudaStreamSynchronize(stream_), "running a step"));
  }
  return Finish(sampler_->Sample(logits_.data(), rows, tokens, stream_));
}

absl::Status CudaBackend::Finish(absl::Status status) {
  if (!status.ok()) cudaStreamSynchronize(stream_);
  return status;
}

absl::Status CudaBackend::RunStep(const StepPlan& plan) {
  logit_rows_ = 0;
  StepLimits limits;
  limits.vocab_size = config_.vocab_size;
  limits.num_kv_blocks = num_kv_blocks_;
  limits.num_host_blocks = options_.num_host_blocks;
  limits.block_size = options_.block_size;
  limits.max_tokens = options_.max_tokens_per_step;
  limits.max_sequences = options_.max_sequences_per_step;
  limits.max_context = config_.max_position_embeddings;
  REFLECT_RETURN_IF_ERROR(ValidateStepPlan(plan, limits));

  const bool use_graph = options_.cuda_graphs && IsDecodeStep(plan);
  const int64_t padded_rows = use_graph ? RowBucket(std::ssize(plan.sequences)) : 0;
  const StepLayout layout = LayoutStep(plan, options_.block_size, keys_per_split_, padded_rows);
  const auto scratch_block = static_cast<int32_t>(num_kv_blocks_);
  PackStepMetadata(plan, layout, options_.block_size, scratch_block, metadata_host_.data());
  if (layout.size() > 0) {
    REFLECT_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(metadata_.data(), metadata_host_.data(), layout.size() * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream_),
        "uploading the step's metadata"));
  }
  REFLECT_RETURN_IF_ERROR(ApplyBlockOperations(plan));
  if (plan.sequences.empty()) return absl::OkStatus();

  if (!use_graph) {
    REFLECT_RETURN_IF_ERROR(RunModel(layout));
  } else if (const auto graph = graphs_.find(GraphKey(layout.tokens, layout.max_context));
             graph != graphs_.end()) {
    REFLECT_RETURN_IF_ERROR(
        CudaStatus(cudaGraphLaunch(graph->second, stream_), "launching a decode graph"));
  } else {
    // The first step of a bucket runs eagerly (choosing GEMM algorithms and loading kernels
    // outside the capture), then is recorded for the next ones.
    REFLECT_RETURN_IF_ERROR(RunModel(layout));
    REFLECT_RETURN_IF_ERROR(CaptureGraph(GraphKey(layout.tokens, layout.max_context), layout));
  }
  logit_rows_ = std::ranges::count_if(
      plan.sequences, [](const ScheduledSequence& sequence) { return sequence.needs_logits; });
  return absl::OkStatus();
}

absl::Status CudaBackend::ApplyBlockOperations(const StepPlan& plan) {
  for (const BlockSwap& swap : plan.swap_out) {
    REFLECT_RETURN_IF_ERROR(SwapBlock(swap.device_block, swap.host_block, cudaMemcpyDeviceToHost));
  }
  if (!plan.block_copies.empty()) {
    const int64_t count = std::ssize(plan.block_copies);
    if (copies_host_.size() < 2 * count) {
      const int64_t capacity = std::max(2 * count, 2 * copies_host_.size());
      REFLECT_ASSIGN_OR_RETURN(copies_host_,
                               PinnedBuffer<int32_t>::Allocate(capacity, "block copy lists"));
      REFLECT_ASSIGN_OR_RETURN(copies_, DeviceBuffer<int32_t>::Allocate(capacity, "block copies"));
    }
    for (int64_t index = 0; index < count; ++index) {
      copies_host_.data()[index] = plan.block_copies[index].source_block;
      copies_host_.data()[count + index] = plan.block_copies[index].destination_block;
    }
    REFLECT_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(copies_.data(), copies_host_.data(), 2 * count * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, stream_),
                   "uploading block copies"));
    REFLECT_RETURN_IF_ERROR(CopyBlocks(layer_caches_.data(), config_.num_hidden_layers,
                                       copies_.data(), copies_.data() + count, count,
                                       block_elements(), stream_));
  }
  for (const BlockSwap& swap : plan.swap_in) {
    REFLECT_RETURN_IF_ERROR(SwapBlock(swap.device_block, swap.host_block, cudaMemcpyHostToDevice));
  }
  return absl::OkStatus();
}

// A device block is 2·layers pieces, one per cache, each cache (num_kv_blocks + 1) blocks apart;
// a host block holds the same pieces back to back. One 2D copy moves them all when the cache
// pitch is within the device's copy limit, else one copy per piece.
absl::Status CudaBackend::SwapBlock(int32_t device_block, int32_t host_block,
                                    cudaMemcpyKind direction) {
  const int64_t caches = 2 * config_.num_hidden_layers;
  const int64_t piece_bytes = block_elements() * static_cast<int64_t>(sizeof(Bf16));
  const int64_t cache_pitch = (num_kv_blocks_ + 1) * piece_bytes;
  std::byte* const device =
      reinterpret_cast<std::byte*>(kv_pool_.data()) + device_block * piece_bytes;
  std::byte* const host =
      reinterpret_cast<std::byte*>(host_pool_.data()) + host_block * caches * piece_bytes;
  const bool to_host = direction == cudaMemcpyDeviceToHost;
  std::byte* const destination = to_host ? host : device;
  const std::byte* const source = to_host ? device : host;
  const int64_t destination_pitch = to_host ? piece_bytes : cache_pitch;
  const int64_t source_pitch = to_host ? cache_pitch : piece_bytes;
  const char* what = to_host ? "swapping a KV block out" : "swapping a KV block in";
  if (cache_pitch <= max_copy_pitch_) {
    return CudaStatus(cudaMemcpy2DAsync(destination, destination_pitch, source, source_pitch,
                                        piece_bytes, caches, direction, stream_),
                      what);
  }
  for (int64_t cache = 0; cache < caches; ++cache) {
    REFLECT_RETURN_IF_ERROR(
        CudaStatus(cudaMemcpyAsync(destination + cache * destination_pitch,
                                   source + cache * source_pitch, piece_bytes, direction, stream_),
                   what));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::RunModel(const StepLayout& layout) {
  const int32_t* const metadata = metadata_.data();
  AttentionBatch batch;
  batch.tokens = layout.tokens;
  batch.positions = metadata + layout.positions_offset();
  batch.token_sequence = metadata + layout.token_sequence_offset();
  batch.block_tables = metadata + layout.block_tables_offset();
  batch.max_blocks_per_sequence = layout.blocks_per_sequence;
  batch.block_size = options_.block_size;
  batch.num_blocks = num_kv_blocks_ + 1;
  const int64_t hidden = config_.hidden_size;
  REFLECT_RETURN_IF_ERROR(EmbedTokens(metadata + layout.token_ids_offset(), layout.tokens,
                                      weights_->embedding, 0, config_.vocab_size, hidden,
                                      residual_.data(), stream_));
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    REFLECT_RETURN_IF_ERROR(RunLayer(layer, batch, layout.max_context));
  }
  if (layout.logit_rows == 0) return absl::OkStatus();
  REFLECT_RETURN_IF_ERROR(RmsNorm(
      residual_.data(), metadata + layout.logit_rows_offset(), layout.logit_rows, hidden,
      weights_->final_norm, static_cast<float>(config_.rms_norm_eps), gemm_input_.data(), stream_));
  return gemm_->Multiply(gemm_input_.data(), layout.logit_rows, weights_->lm_head,
                         config_.vocab_size, hidden, logits_.data(), /*accumulate=*/false, stream_);
}

absl::Status CudaBackend::RunLayer(int64_t layer, const AttentionBatch& batch,
                                   int64_t max_context) {
  const CudaLayerWeights& weights = weights_->layers[layer];
  const int64_t rows = batch.tokens;
  const int64_t hidden = config_.hidden_size;
  const int64_t intermediate = config_.intermediate_size;
  const float epsilon = static_cast<float>(config_.rms_norm_eps);
  float* const residual = residual_.data();
  Bf16* const gemm_input = gemm_input_.data();
  float* const gemm_output = gemm_output_.data();

  REFLECT_RETURN_IF_ERROR(
      RmsNorm(residual, nullptr, rows, hidden, weights.input_norm, epsilon, gemm_input, stream_));
  REFLECT_RETURN_IF_ERROR(gemm_->Multiply(gemm_input, rows, weights.qkv, qkv_width(), hidden,
                                          gemm_output, /*accumulate=*/false, stream_));
  REFLECT_RETURN_IF_ERROR(RotateAndStore(gemm_output, batch, config_.num_attention_heads,
                                         config_.num_key_value_heads, config_.head_dim,
                                         weights_->inverse_frequencies, key_cache(layer),
                                         value_cache(layer), stream_));
  REFLECT_RETURN_IF_ERROR(Attend(layer, batch, max_context));  // into gemm_input
  REFLECT_RETURN_IF_ERROR(gemm_->Multiply(gemm_input, rows, weights.output, hidden, query_width(),
                                          residual, /*accumulate=*/true, stream_));

  REFLECT_RETURN_IF_ERROR(RmsNorm(residual, nullptr, rows, hidden, weights.post_attention_norm,
                                  epsilon, gemm_input, stream_));
  REFLECT_RETURN_IF_ERROR(gemm_->Multiply(gemm_input, rows, weights.gate_up, 2 * intermediate,
                                          hidden, gemm_output, /*accumulate=*/false, stream_));
  REFLECT_RETURN_IF_ERROR(SiluAndMultiply(gemm_output, rows, intermediate, gemm_input, stream_));
  return gemm_->Multiply(gemm_input, rows, weights.down, hidden, intermediate, residual,
                         /*accumulate=*/true, stream_);
}

// Attention in groups of tokens small enough for the scratch; each token's result depends on its
// own context only, so the grouping changes no bits.
absl::Status CudaBackend::Attend(int64_t layer, const AttentionBatch& batch, int64_t max_context) {
  const int64_t heads = config_.num_attention_heads;
  const int64_t head_dim = config_.head_dim;
  const auto scratch_floats = [&](int64_t tokens) {
    return AttentionScratchFloats(tokens, heads, head_dim, max_context, keys_per_split_);
  };
  int64_t group = std::min(
      batch.tokens,
      std::max<int64_t>(1, attention_scratch_.size() / std::max<int64_t>(1, scratch_floats(1))));
  while (group > 1 && scratch_floats(group) > attention_scratch_.size()) group /= 2;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t begin = 0; begin < batch.tokens; begin += group) {
    AttentionBatch part = batch;
    part.tokens = std::min(group, batch.tokens - begin);
    part.positions = batch.positions + begin;
    part.token_sequence = batch.token_sequence + begin;
    REFLECT_RETURN_IF_ERROR(PagedAttention(
        gemm_output_.data() + begin * qkv_width(), part, heads, config_.num_key_value_heads,
        head_dim, scale, key_cache(layer), value_cache(layer), max_context, keys_per_split_,
        attention_scratch_.data(), gemm_input_.data() + begin * query_width(), stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::CaptureGraph(const GraphKey& key, const StepLayout& layout) {
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                 "beginning a decode graph capture"));
  const absl::Status recorded = RunModel(layout);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  if (!recorded.ok() || ended != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // an invalidated capture must not surface as a later launch error
    return recorded.ok() ? CudaStatus(ended, "capturing a decode graph") : recorded;
  }
  cudaGraphExec_t executable = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&executable, graph, 0);
  cudaGraphDestroy(graph);
  REFLECT_RETURN_IF_ERROR(CudaStatus(instantiated, "instantiating a decode graph"));
  graphs_.emplace(key, executable);
  return absl::OkStatus();
}

}  // namespace reflect::cuda
