// The CPU backend (DESIGN §6): the embedded default and the oracle for every CUDA kernel.
//
// Batch invariant: a sequence's logits are bit-identical whether it runs alone or inside any
// batch, and however its prompt is split into prefill chunks. Every reduction (matmul rows,
// attention over keys, norms) runs in an order fixed per row and per query position; threads
// split work only across independent outputs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/checkpoint.h"
#include "worker/llama_weights.h"

namespace reflect {

struct CpuBackendOptions {
  int64_t num_kv_blocks = 1024;
  int64_t block_size = 16;  // tokens per KV block
  int num_threads = 0;      // 0: one per core
  // Host swap pool for StepPlan.swap_out / swap_in, in blocks of the same shape (match
  // BlockManagerConfig::num_host_blocks); 0: no swap space, and a plan that swaps is refused.
  int64_t num_host_blocks = 0;
};

// Loads config.json and the safetensors of `model_dir` and builds a backend over them.
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const std::filesystem::path& model_dir,
                                                          const CpuBackendOptions& options);

// Builds a backend over an opened checkpoint, which it keeps alive.
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const CpuBackendOptions& options);

// Builds a backend over weights already in memory (what the loaders above end in; tests and
// benchmarks call it with tensors they own). Every matrix is repacked into memory the backend
// owns, so those views may die after the call — except embed_tokens, whose rows are read in
// place at every step: `weights_owner` is kept alive for it (null when the caller guarantees
// embed_tokens outlives the backend). Shapes are checked against `config` (INVALID_ARGUMENT).
absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackendFromWeights(
    const ModelConfig& config, const LlamaWeights& weights, const CpuBackendOptions& options,
    std::shared_ptr<const void> weights_owner);

}  // namespace reflect
