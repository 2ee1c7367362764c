#include "tools/reflect/backend_flags.h"

#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "common/status_macros.h"
#include "tools/reflect/common_flags.h"
#include "worker/backend_kind.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/llama_weights.h"

ABSL_FLAG(std::string, backend, "cpu", "generate, logits, bench: the backend, cpu or cuda");
ABSL_FLAG(double, gpu_memory_utilization, 0.90,
          "cuda: fraction of the device's memory for weights, activations and the KV cache");
ABSL_FLAG(bool, deterministic, false,
          "cuda: batch-invariant kernels, so a sequence's logits do not depend on its batch");
ABSL_FLAG(bool, cuda_graphs, true, "cuda: replay decode steps from CUDA graphs");
ABSL_FLAG(int32_t, device, 0, "cuda: the CUDA device to run on");

namespace reflect::cli {
namespace {

CpuBackendOptions CpuOptions(const BackendSizing& sizing) {
  CpuBackendOptions options;
  options.num_kv_blocks = sizing.num_kv_blocks;
  options.block_size = sizing.block_size;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  return options;
}

}  // namespace

absl::StatusOr<bool> CudaBackendRequested() {
  REFLECT_ASSIGN_OR_RETURN(const BackendKind kind, ParseBackendKind(absl::GetFlag(FLAGS_backend)));
  return kind == BackendKind::kCuda;
}

absl::StatusOr<cuda::CudaBackendOptions> CudaOptionsFromFlags(const BackendSizing& sizing) {
  cuda::CudaBackendOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  options.deterministic = absl::GetFlag(FLAGS_deterministic);
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.num_kv_blocks = sizing.num_kv_blocks;
  options.block_size = sizing.block_size;
  options.max_tokens_per_step = sizing.max_tokens_per_step;
  options.max_sequences_per_step = sizing.max_sequences_per_step;
  REFLECT_RETURN_IF_ERROR(CheckCudaFlags(options.gpu_memory_utilization, options.device,
                                         /*ranks_per_replica=*/1));
  return options;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackendFromFlags(
    const std::filesystem::path& model_dir, const BackendSizing& sizing) {
  REFLECT_ASSIGN_OR_RETURN(const bool use_cuda, CudaBackendRequested());
  if (!use_cuda) return CreateCpuBackend(model_dir, CpuOptions(sizing));
#ifdef REFLECT_WITH_CUDA
  REFLECT_RETURN_IF_ERROR(cuda::CheckCudaUsable("reflect"));
  REFLECT_ASSIGN_OR_RETURN(const cuda::CudaBackendOptions options, CudaOptionsFromFlags(sizing));
  return cuda::CreateCudaBackend(model_dir, options);
#else
  return cuda::CheckCudaUsable("reflect");  // "built without CUDA"
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackendFromFlags(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const BackendSizing& sizing) {
  REFLECT_ASSIGN_OR_RETURN(const bool use_cuda, CudaBackendRequested());
  if (!use_cuda) return CreateCpuBackend(std::move(checkpoint), config, CpuOptions(sizing));
#ifdef REFLECT_WITH_CUDA
  REFLECT_RETURN_IF_ERROR(cuda::CheckCudaUsable("reflect"));
  REFLECT_ASSIGN_OR_RETURN(const cuda::CudaBackendOptions options, CudaOptionsFromFlags(sizing));
  REFLECT_ASSIGN_OR_RETURN(const LlamaWeights weights, LoadLlamaWeights(*checkpoint, config));
  return cuda::CreateCudaBackendFromWeights(config, weights, options);
#else
  return cuda::CheckCudaUsable("reflect");  // "built without CUDA"
#endif
}

}  // namespace reflect::cli
