// The CUDA backend (DESIGN §6, issue #5): a Llama model on one GPU in bf16 with f32 accumulation —
// cuBLASLt GEMMs (cuda_gemm.h), the kernels of cuda_ops.h, sampling on the device
// (cuda_sampler.h), decode steps replayed from CUDA graphs captured per batch-size bucket.
//
// Memory: weights are uploaded once as bf16 (converted from the checkpoint's f32 / f16 / bf16),
// q/k/v and gate/up fused into one matrix each. The KV pool takes what `gpu_memory_utilization`
// of the device's total memory leaves after weights, activations for max_tokens_per_step and the
// graphs: num_kv_blocks() reports it (or options.num_kv_blocks when set). Swapped-out blocks go to
// a pinned host pool of options.num_host_blocks.
//
// Steps: Forward copies logits to the host (tests, golden checks); ForwardAndSample keeps them on
// the device and copies back only the sampled tokens. A step whose sequences all decode one
// token, with at most the largest bucket of them, replays the graph of the smallest bucket that
// holds it (padding rows write to a reserved scratch block and are never sampled); anything
// else runs eagerly.
//
// Deterministic mode: GEMMs use one cuBLASLt algorithm per shape chosen at load for the largest
// batch, without split-K, and attention splits keys by a fixed count; so a sequence's logits do
// not depend on its neighbours in the batch. Off, cuBLASLt's heuristic picks per batch size.
//
// Ownership: owns every device allocation, its streams, graphs and cuBLASLt handle.
// Thread-safety: one caller at a time (Backend). The device is the one current at Create.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/checkpoint.h"
#include "worker/llama_weights.h"

namespace reflect::cuda {

struct CudaBackendOptions {
  int device = 0;
  // Fraction of the device's total memory this backend may use (weights, activations, graphs,
  // KV pool), as vLLM's --gpu-memory-utilization.
  double gpu_memory_utilization = 0.90;
  int64_t num_kv_blocks = 0;    // 0: size the pool from gpu_memory_utilization
  int64_t block_size = 16;      // tokens per KV block
  int64_t num_host_blocks = 0;  // pinned host swap pool, in blocks
  // The most tokens one step runs (prefill chunks + decodes): sizes activations.
  int64_t max_tokens_per_step = 8192;
  int64_t max_sequences_per_step = 256;  // sizes block tables; the largest graph bucket
  bool deterministic = false;
  bool cuda_graphs = true;
};

// True when a CUDA device is present and usable (tests skip otherwise).
bool CudaDeviceAvailable();

// Loads config.json and the safetensors of `model_dir` (memory-mapped) and uploads them.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const std::filesystem::path& model_dir,
                                                           const CudaBackendOptions& options);

// Builds a backend over weights in host memory (a checkpoint's views, or random weights for
// benchmarks); they may die after the call. Shapes are checked against `config`.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackendFromWeights(
    const ModelConfig& config, const LlamaWeights& weights, const CudaBackendOptions& options);

}  // namespace reflect::cuda
