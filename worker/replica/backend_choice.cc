#include "worker/replica/backend_choice.h"

#include "absl/status/status.h"
#include "common/status_macros.h"

namespace reflect {

int64_t KvBlockBytes(const ModelConfig& model, int64_t block_size, int64_t bytes_per_element) {
  return 2 * bytes_per_element * model.num_hidden_layers * model.num_key_value_heads *
         model.head_dim * block_size;
}

int64_t KvElementBytes(BackendKind kind) { return kind == BackendKind::kCuda ? 2 : 4; }

int64_t KvBlocksInGib(const ModelConfig& model, int64_t block_size, BackendKind kind, double gib) {
  const double block_bytes =
      static_cast<double>(KvBlockBytes(model, block_size, KvElementBytes(kind)));
  if (block_bytes <= 0.0 || gib <= 0.0) return 0;
  return static_cast<int64_t>(gib * 1024.0 * 1024.0 * 1024.0 / block_bytes);
}

int64_t HostSwapBlocks(const WorkerBackendFlags& flags, const ModelConfig& model) {
  return KvBlocksInGib(model, flags.block_size, flags.kind, flags.swap_space_gib);
}

CpuBackendOptions CpuOptionsFor(const WorkerBackendFlags& flags, const ModelConfig& model) {
  CpuBackendOptions options;
  options.block_size = flags.block_size;
  options.num_threads = flags.threads;
  options.num_kv_blocks =
      flags.num_kv_blocks > 0
          ? flags.num_kv_blocks
          : KvBlocksInGib(model, flags.block_size, BackendKind::kCpu, flags.kv_cache_gib);
  options.num_host_blocks = HostSwapBlocks(flags, model);
  return options;
}

absl::StatusOr<cuda::CudaBackendOptions> CudaOptionsFor(const WorkerBackendFlags& flags,
                                                        const ModelConfig& model, int world_size) {
  REFLECT_RETURN_IF_ERROR(CheckCudaFlags(flags.gpu_memory_utilization, flags.device, world_size));
  cuda::CudaBackendOptions options;
  options.device = flags.device;
  options.gpu_memory_utilization = flags.gpu_memory_utilization;
  options.num_kv_blocks = flags.num_kv_blocks;
  options.block_size = flags.block_size;
  options.num_host_blocks = HostSwapBlocks(flags, model);
  options.max_tokens_per_step = flags.max_num_batched_tokens;
  options.max_sequences_per_step = flags.max_num_seqs;
  options.deterministic = flags.deterministic;
  options.cuda_graphs = flags.cuda_graphs;
  return options;
}

}  // namespace reflect
