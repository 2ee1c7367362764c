// The file-backed factories of cpu_backend.h, kept apart from the backend itself so programs
// that build models in memory do not pull in the checkpoint loaders.
#include <utility>

#include "common/model_config.h"
#include "common/status_macros.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/llama_weights.h"

namespace reflect {

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const CpuBackendOptions& options) {
  if (checkpoint == nullptr) return absl::InvalidArgumentError("CreateCpuBackend: no checkpoint");
  REFLECT_ASSIGN_OR_RETURN(LlamaWeights weights, LoadLlamaWeights(*checkpoint, config));
  return CreateCpuBackendFromWeights(config, weights, options, std::move(checkpoint));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const std::filesystem::path& model_dir,
                                                          const CpuBackendOptions& options) {
  REFLECT_ASSIGN_OR_RETURN(ModelDirectoryConfig directory_config, LoadModelConfig(model_dir));
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(model_dir));
  return CreateCpuBackend(std::shared_ptr<const Checkpoint>(std::move(checkpoint)),
                          directory_config.model, options);
}

}  // namespace reflect
