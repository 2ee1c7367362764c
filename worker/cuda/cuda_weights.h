// CudaModelWeights: a Llama model's weights in GPU memory, in the form the CUDA backend runs
// (DESIGN §6, issue #5). Matrices are bf16 (from the checkpoint's f32, f16 or bf16: f32 → bf16
// rounds to nearest even as common/dtype.h), in PyTorch's [out, in] layout, with each layer's
// q/k/v fused into one matrix and gate/up into another so that one GEMM computes each. Norm
// weights and RoPE's inverse frequencies are f32. A tied LM head is the embedding table itself.
//
// Ownership: `matrices` and `vectors` own the memory every pointer points into (pointers stay
// valid when the struct moves). Immutable after upload; read by the device only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/cuda/cuda_ops.h"
#include "worker/cuda/device_buffer.h"
#include "worker/llama_weights.h"

namespace reflect::cuda {

struct CudaLayerWeights {
  const float* input_norm = nullptr;  // [hidden]
  // [(heads + 2·kv_heads)·head_dim, hidden]: q_proj rows, then k_proj, then v_proj.
  const Bf16* qkv = nullptr;
  const Bf16* output = nullptr;                // o_proj [hidden, heads·head_dim]
  const float* post_attention_norm = nullptr;  // [hidden]
  const Bf16* gate_up = nullptr;  // [2·intermediate, hidden]: gate_proj rows, then up_proj rows
  const Bf16* down = nullptr;     // [hidden, intermediate]
};

struct CudaModelWeights {
  const Bf16* embedding = nullptr;  // [vocab, hidden]
  std::vector<CudaLayerWeights> layers;
  const float* final_norm = nullptr;           // [hidden]
  const Bf16* lm_head = nullptr;               // [vocab, hidden]; the embedding when tied
  const float* inverse_frequencies = nullptr;  // [head_dim / 2], llama3 scaling applied
  DeviceBuffer<Bf16> matrices;
  DeviceBuffer<float> vectors;

  int64_t bytes() const { return matrices.bytes() + vectors.bytes(); }
};

// True when the LM head is the embedding table (tie_word_embeddings: same view).
bool TiedEmbeddings(const LlamaWeights& weights);

// Device bytes UploadLlamaWeights allocates for `config`.
int64_t CudaWeightBytes(const ModelConfig& config, bool tied_embeddings);

// Uploads `weights`, whose shapes were checked against `config` (cpu::ValidateLlamaWeights),
// converting on the host in chunks into pinned staging buffers whose copies overlap the next
// chunk's conversion. Returns once every copy has finished (the host views may die then).
// RESOURCE_EXHAUSTED when the device memory is not there.
absl::StatusOr<CudaModelWeights> UploadLlamaWeights(const ModelConfig& config,
                                                    const LlamaWeights& weights,
                                                    cudaStream_t stream);

}  // namespace reflect::cuda
