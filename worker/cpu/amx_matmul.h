// The AMX matmul: y[M, N] = x[M, K] · W[N, K]ᵀ for W packed as PackedType::kBF16Amx.
//
// Arithmetic per output element (the batch-invariance contract): x is rounded to bf16 per
// element (round-to-nearest-even) and zero-padded to a multiple of 32 in k; y[m, n] is one f32
// lane of a C tile, zeroed, then updated by one tdpbf16ps per 32-k block in increasing k, then
// the epilogue (store / add to the residual / silu(gate) · up). tdpbf16ps computes each C element
// from its own A row and B column only, so neither M, nor which rows share a tile (row tails use
// zero A rows), nor the panel or thread split changes any element's operations. K is never split.
//
// Blocking (performance only): 32 output columns per panel (two B tiles per k-block), 32 rows per
// block (two A tiles, four C tiles); tasks are (row group, run of consecutive panels) with a row
// group sized to stay in L2 while the panels stream past; the first block of each panel
// prefetches the weights ahead, across panel boundaries within the run.
//
// Requires AmxUsable(); configures the tiles of every pool thread it runs on. `scratch` is the
// caller's and is resized as needed.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/cpu/matmul.h"
#include "worker/cpu/packed_matrix.h"
#include "worker/cpu/thread_pool.h"

namespace reflect::cpu {

void AmxMatmul(const float* input, int64_t rows, int64_t input_stride, const PackedMatrix& weight,
               MatmulOutput mode, float* output, int64_t output_stride, ThreadPool& pool,
               std::vector<uint16_t>& scratch);

}  // namespace reflect::cpu
