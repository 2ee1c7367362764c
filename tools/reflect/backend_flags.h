// The backend a `reflect` subcommand runs on (generate, logits, bench): --backend cpu (default)
// or cuda, with the CUDA backend's flags (--gpu_memory_utilization, --deterministic,
// --cuda_graphs, --device). A subcommand says how big its steps and KV pool must be
// (BackendSizing); the flags say the rest.
//
// --backend cuda in a build without CUDA, or on a machine without a usable device, is
// FAILED_PRECONDITION naming the problem (cuda::CheckCudaUsable), never a crash.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/checkpoint.h"
#include "worker/cuda/cuda_backend.h"
#include "worker/cuda/cuda_usable.h"

ABSL_DECLARE_FLAG(std::string, backend);
ABSL_DECLARE_FLAG(double, gpu_memory_utilization);
ABSL_DECLARE_FLAG(bool, deterministic);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(int32_t, device);

namespace reflect::cli {

// What a subcommand needs of its backend.
struct BackendSizing {
  // CPU: > 0. CUDA: 0 takes the pool --gpu_memory_utilization leaves (Backend::num_kv_blocks).
  int64_t num_kv_blocks = 0;
  int64_t block_size = 16;               // tokens per KV block
  int64_t max_tokens_per_step = 8192;    // CUDA: sizes activations
  int64_t max_sequences_per_step = 256;  // CUDA: block tables, the largest graph bucket
};

// --backend: false for cpu, true for cuda; INVALID_ARGUMENT for anything else.
absl::StatusOr<bool> CudaBackendRequested();

// The CUDA backend's options from the flags and `sizing`; INVALID_ARGUMENT for a flag out of
// range.
absl::StatusOr<cuda::CudaBackendOptions> CudaOptionsFromFlags(const BackendSizing& sizing);

// The backend --backend names over the model directory `model_dir`.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackendFromFlags(
    const std::filesystem::path& model_dir, const BackendSizing& sizing);

// The same over weights already open (a checkpoint on disk or in memory): the CPU backend keeps
// `checkpoint` alive; the CUDA backend copies the weights to the device and keeps nothing.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackendFromFlags(
    std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config,
    const BackendSizing& sizing);

}  // namespace reflect::cli
