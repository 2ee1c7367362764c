// Random Llama weights in memory, for benchmarks of big shapes without a checkpoint on disk
// (`reflect bench --preset 8b`): every tensor of LlamaTensorRecipe(config) with
// weight_generator.h's values — the very bytes `reflect mkmodel` would write for the same seed and
// dtype — generated in parallel straight into host memory and served through the Checkpoint
// interface, so LoadLlamaWeights and every backend take it like a directory they opened.
//
// Cost: the weights' bytes once in host memory (8b in bf16: 16 GB); generation runs
// `num_threads` threads over chunks of every tensor (a few seconds for 8b on 16 cores).
// Ownership: the checkpoint owns the memory its TensorViews point into.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/model_config.h"
#include "worker/checkpoint.h"

namespace reflect::cli {

// RESOURCE_EXHAUSTED when the host cannot hold the weights. `num_threads` 0: one per core.
absl::StatusOr<std::unique_ptr<Checkpoint>> MakeRandomCheckpoint(const ModelConfig& config,
                                                                 uint64_t seed, DType dtype,
                                                                 int num_threads);

}  // namespace reflect::cli
