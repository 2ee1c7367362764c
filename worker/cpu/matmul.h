// Matmul: y[M, N] = x[M, K] · W[N, K]ᵀ over a PackedMatrix, parallel over panels.
//
// The kernel follows the packing: kBF16Amx → tdpbf16ps (amx_matmul.h), kBF16 → vdpbf16ps,
// kF32 → FMA. Which one a bf16 weight gets is fixed at load (SelectedBf16Kernel), never by M.
//
// Batch invariance: y[m, n] is one accumulator lane, started at zero and updated once per k step
// in increasing k (a 32-k tdpbf16ps block for AMX, a k-pair vdpbf16ps for kBF16, with x rounded
// to bf16 per element; FMA for f32 weights). That sequence does not depend on M, on which rows
// share a register or tile, on panel boundaries or on the thread, so any row computed inside any
// batch is bit-identical.
//
// Thread-safety: uses `pool`; `scratch` is the caller's and is resized as needed.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/cpu/packed_matrix.h"
#include "worker/cpu/thread_pool.h"

namespace reflect::cpu {

enum class MatmulOutput {
  kStore,       // y = x·Wᵀ
  kAccumulate,  // y += x·Wᵀ (the residual add)
  kSwiGlu,      // W packed by PackGateUp: y = silu(x·Gᵀ) * (x·Uᵀ), N = gate rows
};

// `input` rows are `input_stride` floats apart, `output` rows `output_stride` floats apart.
void Matmul(const float* input, int64_t rows, int64_t input_stride, const PackedMatrix& weight,
            MatmulOutput mode, float* output, int64_t output_stride, ThreadPool& pool,
            std::vector<uint16_t>& scratch);

}  // namespace reflect::cpu
