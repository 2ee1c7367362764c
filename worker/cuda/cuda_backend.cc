// The factories of cuda_backend.h and CudaBackend's creation: options, weights, working memory,
// then the KV pool sized from what is left.
#include "worker/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/cpu/cpu_model_weights.h"
#include "worker/cuda/cuda_backend_internal.h"
#include "worker/cuda/cuda_status.h"

namespace reflect::cuda {
namespace {

// Device memory kept free below the utilization limit for what is allocated after the KV pool:
// decode graphs captured on first use, cuBLASLt kernels loaded lazily, and the sampler's
// buffers, which grow with the rows and logprobs asked for.
constexpr int64_t kLateAllocationReserveBytes = int64_t{512} << 20;
// The attention scratch holds at most this many floats (256 MiB), or one token's splits at the
// longest context when that is more; longer steps run their attention in groups of tokens.
constexpr int64_t kAttentionScratchFloats = int64_t{64} << 20;

std::string GiB(double bytes) { return absl::StrFormat("%.2f GiB", bytes / (1 << 30)); }

absl::Status ValidateOptions(const CudaBackendOptions& options) {
  if (!(options.gpu_memory_utilization > 0.0 && options.gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA backend: gpu_memory_utilization %g must be in (0, 1]",
                        options.gpu_memory_utilization));
  }
  if (options.device < 0 || options.block_size <= 0 || options.num_kv_blocks < 0 ||
      options.num_host_blocks < 0 || options.max_tokens_per_step <= 0 ||
      options.max_sequences_per_step <= 0) {
    return absl::InvalidArgumentError(
        "CUDA backend: device, num_kv_blocks and num_host_blocks must not be negative; "
        "block_size, max_tokens_per_step and max_sequences_per_step must be positive");
  }
  if (options.num_kv_blocks >= std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CUDA backend: num_kv_blocks %d does not fit 32-bit block ids", options.num_kv_blocks));
  }
  return absl::OkStatus();
}

struct DeviceMemory {
  int64_t free = 0;
  int64_t total = 0;
  int64_t used() const { return total - free; }
};

absl::StatusOr<DeviceMemory> QueryDeviceMemory() {
  size_t free = 0;
  size_t total = 0;
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaMemGetInfo(&free, &total), "cudaMemGetInfo"));
  return DeviceMemory{static_cast<int64_t>(free), static_cast<int64_t>(total)};
}

}  // namespace

int64_t KeysPerSplit(int64_t block_size) {
  constexpr int64_t kKeysPerSplit = 512;
  return (kKeysPerSplit + block_size - 1) / block_size * block_size;
}

CudaBackend::CudaBackend(const ModelConfig& config, const CudaBackendOptions& options)
    : config_(config),
      options_(options),
      keys_per_split_(KeysPerSplit(options.block_size)),
      token_capacity_(
          std::max(options.max_tokens_per_step, RowBucket(options.max_sequences_per_step))),
      row_capacity_(RowBucket(options.max_sequences_per_step)),
      context_capacity_(ContextBucket(config.max_position_embeddings, keys_per_split_)) {}

CudaBackend::~CudaBackend() {
  if (stream_ == nullptr) return;
  // Errors cannot be reported from here; a failed device leaves nothing to wait for anyway.
  cudaStreamSynchronize(stream_);
  for (const auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph);
  cudaStreamDestroy(stream_);
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const ModelConfig& config, const LlamaWeights& weights, const CudaBackendOptions& options) {
  REFLECT_RETURN_IF_ERROR(ValidateOptions(options));
  REFLECT_RETURN_IF_ERROR(cpu::ValidateLlamaWeights(config, weights));
  if (config.max_position_embeddings <= 0 ||
      config.max_position_embeddings > std::numeric_limits<int32_t>::max() / 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "CUDA backend: max_position_embeddings %d out of range", config.max_position_embeddings));
  }
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess) {
    cudaGetLastError();
    device_count = 0;
  }
  if (options.device >= device_count) {
    return absl::FailedPreconditionError(
        absl::StrFormat("CUDA backend: device %d requested, %d CUDA devices present",
                        options.device, device_count));
  }
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options.device), "cudaSetDevice"));
  std::unique_ptr<CudaBackend> backend(new CudaBackend(config, options));
  REFLECT_RETURN_IF_ERROR(CudaStatus(
      cudaStreamCreateWithFlags(&backend->stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
  int max_pitch = 0;
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(cudaDeviceGetAttribute(&max_pitch, cudaDevAttrMaxPitch, options.device),
                 "cudaDeviceGetAttribute(MaxPitch)"));
  backend->max_copy_pitch_ = max_pitch;

  REFLECT_ASSIGN_OR_RETURN(const DeviceMemory memory, QueryDeviceMemory());
  const double budget = options.gpu_memory_utilization * static_cast<double>(memory.total);
  const int64_t weight_bytes = CudaWeightBytes(config, TiedEmbeddings(weights));
  if (static_cast<double>(memory.used() + weight_bytes) > budget) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "CUDA backend: the model's bf16 weights need %s, but gpu_memory_utilization %.3f of the "
        "device's %s allows %s and %s are in use already",
        GiB(weight_bytes), options.gpu_memory_utilization, GiB(memory.total), GiB(budget),
        GiB(memory.used())));
  }
  REFLECT_ASSIGN_OR_RETURN(backend->weights_,
                           UploadLlamaWeights(config, weights, backend->stream_));
  REFLECT_RETURN_IF_ERROR(backend->AllocateWorkingMemory());
  REFLECT_RETURN_IF_ERROR(backend->AllocateKvPool());
  REFLECT_RETURN_IF_ERROR(backend->CheckAttentionShape());
  return backend;
}

absl::Status CudaBackend::AllocateWorkingMemory() {
  const int64_t hidden = config_.hidden_size;
  const int64_t intermediate = config_.intermediate_size;
  REFLECT_ASSIGN_OR_RETURN(gemm_, CudaGemm::Create(options_.deterministic));
  REFLECT_RETURN_IF_ERROR(gemm_->AddShape(qkv_width(), hidden, token_capacity_));
  REFLECT_RETURN_IF_ERROR(gemm_->AddShape(hidden, query_width(), token_capacity_));
  REFLECT_RETURN_IF_ERROR(gemm_->AddShape(2 * intermediate, hidden, token_capacity_));
  REFLECT_RETURN_IF_ERROR(gemm_->AddShape(hidden, intermediate, token_capacity_));
  REFLECT_RETURN_IF_ERROR(gemm_->AddShape(config_.vocab_size, hidden, row_capacity_));

  REFLECT_ASSIGN_OR_RETURN(
      residual_, DeviceBuffer<float>::Allocate(token_capacity_ * hidden, "the residual stream"));
  const int64_t input_width = std::max({hidden, query_width(), intermediate});
  REFLECT_ASSIGN_OR_RETURN(
      gemm_input_, DeviceBuffer<Bf16>::Allocate(token_capacity_ * input_width, "GEMM inputs"));
  const int64_t output_width = std::max(qkv_width(), 2 * intermediate);
  REFLECT_ASSIGN_OR_RETURN(
      gemm_output_, DeviceBuffer<float>::Allocate(token_capacity_ * output_width, "GEMM outputs"));
  REFLECT_ASSIGN_OR_RETURN(
      logits_, DeviceBuffer<float>::Allocate(row_capacity_ * config_.vocab_size, "logits"));

  const auto scratch_floats = [&](int64_t tokens) {
    return AttentionScratchFloats(tokens, config_.num_attention_heads, config_.head_dim,
                                  context_capacity_, keys_per_split_);
  };
  const int64_t scratch = std::max(
      scratch_floats(1), std::min(kAttentionScratchFloats, scratch_floats(token_capacity_)));
  REFLECT_ASSIGN_OR_RETURN(attention_scratch_,
                           DeviceBuffer<float>::Allocate(scratch, "attention scratch"));

  StepLayout largest;
  largest.tokens = token_capacity_;
  largest.sequences = largest.logit_rows = row_capacity_;
  largest.blocks_per_sequence = context_capacity_ / options_.block_size;
  REFLECT_ASSIGN_OR_RETURN(metadata_host_,
                           PinnedBuffer<int32_t>::Allocate(largest.size(), "step metadata"));
  REFLECT_ASSIGN_OR_RETURN(metadata_,
                           DeviceBuffer<int32_t>::Allocate(largest.size(), "step metadata"));
  REFLECT_ASSIGN_OR_RETURN(CudaSampler sampler, CudaSampler::Create(config_.vocab_size));
  sampler_.emplace(std::move(sampler));
  return absl::OkStatus();
}

absl::Status CudaBackend::AllocateKvPool() {
  const int64_t caches = 2 * config_.num_hidden_layers;
  const int64_t bytes_per_block = caches * block_elements() * static_cast<int64_t>(sizeof(Bf16));
  int64_t blocks = options_.num_kv_blocks;
  if (blocks == 0) {
    REFLECT_ASSIGN_OR_RETURN(const DeviceMemory memory, QueryDeviceMemory());
    const double budget = options_.gpu_memory_utilization * static_cast<double>(memory.total);
    const double available =
        budget - static_cast<double>(memory.used() + kLateAllocationReserveBytes);
    // One block more than the scheduler gets: the scratch block.
    blocks = static_cast<int64_t>(std::floor(available / static_cast<double>(bytes_per_block))) - 1;
    if (blocks < 1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "CUDA backend: no room for a KV cache: gpu_memory_utilization %.3f of the device's %s "
          "allows %s; %s are in use after the weights (%s) and activations, %s are kept for "
          "graphs and late allocations, and one block takes %s",
          options_.gpu_memory_utilization, GiB(memory.total), GiB(budget), GiB(memory.used()),
          GiB(weights_->bytes()), GiB(kLateAllocationReserveBytes), GiB(bytes_per_block)));
    }
    blocks = std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max() - 1);
  }
  REFLECT_ASSIGN_OR_RETURN(
      kv_pool_, DeviceBuffer<Bf16>::Allocate((blocks + 1) * caches * block_elements(),
                                             absl::StrFormat("a KV cache of %d blocks", blocks)));
  num_kv_blocks_ = blocks;
  // Zeroed so that the scratch block read by graph padding holds finite values.
  REFLECT_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(kv_pool_.data(), 0, kv_pool_.bytes(), stream_),
                                     "clearing the KV cache"));
  std::vector<Bf16*> cache_pointers;
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) {
    cache_pointers.push_back(key_cache(layer));
    cache_pointers.push_back(value_cache(layer));
  }
  REFLECT_ASSIGN_OR_RETURN(layer_caches_,
                           DeviceBuffer<Bf16*>::Allocate(caches, "KV cache pointers"));
  REFLECT_RETURN_IF_ERROR(
      CudaStatus(cudaMemcpyAsync(layer_caches_.data(), cache_pointers.data(),
                                 caches * sizeof(Bf16*), cudaMemcpyHostToDevice, stream_),
                 "uploading KV cache pointers"));
  REFLECT_ASSIGN_OR_RETURN(
      host_pool_, PinnedBuffer<Bf16>::Allocate(options_.num_host_blocks * caches * block_elements(),
                                               "the host swap pool"));
  return CudaStatus(cudaStreamSynchronize(stream_), "creating the KV cache");
}

absl::Status CudaBackend::CheckAttentionShape() {
  AttentionBatch empty;
  empty.block_size = options_.block_size;
  empty.max_blocks_per_sequence = context_capacity_ / options_.block_size;
  empty.num_blocks = num_kv_blocks_ + 1;
  absl::Status status = RotateAndStore(
      gemm_output_.data(), empty, config_.num_attention_heads, config_.num_key_value_heads,
      config_.head_dim, weights_->inverse_frequencies, key_cache(0), value_cache(0), stream_);
  if (status.ok()) {
    status = PagedAttention(gemm_output_.data(), empty, config_.num_attention_heads,
                            config_.num_key_value_heads, config_.head_dim, 1.0f, key_cache(0),
                            value_cache(0), context_capacity_, keys_per_split_,
                            attention_scratch_.data(), gemm_input_.data(), stream_);
  }
  if (status.ok()) return status;
  return absl::InvalidArgumentError(
      absl::StrCat("CUDA backend: the attention kernels do not run this model (",
                   config_.num_attention_heads, " heads, ", config_.num_key_value_heads,
                   " KV heads, head_dim ", config_.head_dim, "): ", status.message()));
}

int64_t CudaBackend::block_elements() const {
  return options_.block_size * config_.num_key_value_heads * config_.head_dim;
}

Bf16* CudaBackend::key_cache(int64_t layer) const {
  return kv_pool_.data() + 2 * layer * (num_kv_blocks_ + 1) * block_elements();
}

Bf16* CudaBackend::value_cache(int64_t layer) const {
  return kv_pool_.data() + (2 * layer + 1) * (num_kv_blocks_ + 1) * block_elements();
}

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for later calls
    return false;
  }
  return count > 0;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackendFromWeights(
    const ModelConfig& config, const LlamaWeights& weights, const CudaBackendOptions& options) {
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                           CudaBackend::Create(config, weights, options));
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const std::filesystem::path& model_dir,
                                                           const CudaBackendOptions& options) {
  REFLECT_ASSIGN_OR_RETURN(ModelDirectoryConfig directory_config, LoadModelConfig(model_dir));
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(model_dir));
  REFLECT_ASSIGN_OR_RETURN(LlamaWeights weights,
                           LoadLlamaWeights(*checkpoint, directory_config.model));
  return CreateCudaBackendFromWeights(directory_config.model, weights, options);
}

}  // namespace reflect::cuda
