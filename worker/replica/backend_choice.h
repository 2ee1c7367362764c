// How reflect-worker chooses and sizes its Backend (--backend, DESIGN §6): the CPU backend (one
// rank, or every rank of a TP × PP replica group) or the CUDA backend (issue #5; one rank per
// replica for now).
//
// KV sizing stays consistent with the engine loop, which sizes the scheduler's block manager from
// what it is handed: device blocks = Backend::num_kv_blocks(), host blocks =
// EngineLoopOptions::num_host_blocks, which must equal the backend's host pool. So:
//   - CPU:  --num_kv_blocks, else as many f32 blocks as --kv_cache_gib holds;
//   - CUDA: --num_kv_blocks, else 0, and the backend sizes its pool from what
//           --gpu_memory_utilization leaves after weights and activations (it reports the result);
//   - host swap pool (both): as many blocks as --swap_space_gib holds, counted in the backend's
//     own KV element size (f32 on the CPU, bf16 on CUDA), given both to the backend and to the
//     engine loop.
// The CUDA backend's per-step sizes follow the scheduler's limits: activations for
// --max_num_batched_tokens tokens, block tables and the largest graph bucket for --max_num_seqs.
//
// Plain functions over plain data; no CUDA call happens here (worker_main creates the backend).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend_kind.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/cuda/cuda_backend.h"

namespace reflect {

// reflect-worker's backend flags, as parsed.
struct WorkerBackendFlags {
  BackendKind kind = BackendKind::kCpu;
  int64_t num_kv_blocks = 0;  // 0: from kv_cache_gib (CPU) or from free device memory (CUDA)
  double kv_cache_gib = 1.0;  // CPU only
  double swap_space_gib = 0.0;
  int64_t block_size = 16;  // tokens per KV block
  int threads = 0;          // CPU only; 0: one per core
  int64_t max_num_batched_tokens = 2048;
  int64_t max_num_seqs = 256;
  double gpu_memory_utilization = 0.90;  // CUDA only, in (0, 1]
  bool deterministic = false;            // CUDA only (the CPU backend always is)
  bool cuda_graphs = true;               // CUDA only
  int device = 0;                        // CUDA only
};

// Bytes of one KV block: keys and values of every layer and KV head, `bytes_per_element` each.
int64_t KvBlockBytes(const ModelConfig& model, int64_t block_size, int64_t bytes_per_element);

// Bytes of one KV element in `kind`'s cache: 4 (f32) on the CPU, 2 (bf16) on CUDA.
int64_t KvElementBytes(BackendKind kind);

// Whole KV blocks of `kind`'s element size that fit in `gib` GiB.
int64_t KvBlocksInGib(const ModelConfig& model, int64_t block_size, BackendKind kind, double gib);

// The host swap pool in blocks, from --swap_space_gib: both the backend's num_host_blocks and
// the engine loop's.
int64_t HostSwapBlocks(const WorkerBackendFlags& flags, const ModelConfig& model);

// The CPU backend's options (the same on every rank of a CPU replica group).
CpuBackendOptions CpuOptionsFor(const WorkerBackendFlags& flags, const ModelConfig& model);

// The CUDA backend's options. INVALID_ARGUMENT when `world_size` (tensor × pipeline parallel) is
// not 1 ("the CUDA backend runs one rank per replica for now") or a CUDA-only flag is out of
// range.
absl::StatusOr<cuda::CudaBackendOptions> CudaOptionsFor(const WorkerBackendFlags& flags,
                                                        const ModelConfig& model, int world_size);

}  // namespace reflect
