// Deterministic synthetic Llama weights for `reflect mkmodel`: the same bytes on every run and
// every machine, so tests can regenerate the exact checkpoint the golden logits came from.
//
// Element i (row-major) of the tensor named `name`, for a model seeded with `seed`:
//
//   tensor_seed = SplitMix64(seed ^ Fnv1a64(name))
//   bits        = SplitMix64(tensor_seed + (i + 1) * 0x9E3779B97F4A7C15)
//   u           = (bits >> 11) * 2^-53                      uniform in [0, 1)
//   value       = float(mean + std * sqrt(3) * (2u - 1))    uniform with that mean and std
//
// where SplitMix64(z) is the SplitMix64 output function (z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
// z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31). Only integer arithmetic and correctly
// rounded IEEE double operations are involved: no libm, so no platform differences. Each element
// depends on its index alone, so generation can be chunked (and parallel) without changing bytes.
//
// The per-tensor (mean, std) keep activations and logits finite and non-degenerate through every
// layer; see LlamaTensorRecipe and docs/models.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/model_config.h"

namespace reflect::cli {

uint64_t TensorSeed(uint64_t seed, std::string_view tensor_name);

// Stores elements [first_element, first_element + values.size()) of the tensor with
// `tensor_seed` into `values`.
void FillUniform(uint64_t tensor_seed, double mean, double standard_deviation,
                 int64_t first_element, std::span<float> values);

// One tensor of a synthetic model: its Hugging Face name, shape, and distribution.
struct TensorRecipe {
  std::string name;
  std::vector<int64_t> shape;
  double mean = 0;
  double standard_deviation = 0;
};

// Every tensor of a Llama checkpoint for `config`, in file order (embedding, layers, final norm,
// LM head unless tied), with scales:
//   embedding             std 1 (untied) or 3 / sqrt(hidden) (tied: it is also the LM head)
//   q, k, v, gate, up     std 1 / sqrt(hidden)
//   o_proj, down_proj     std sqrt(2 / (fan_in * layers)): all layers together add about as
//                         much variance to the residual stream as the embedding holds
//   RMSNorm weights       mean 1, std 0.05
//   lm_head               std 3 / sqrt(hidden): logits with std about 3
std::vector<TensorRecipe> LlamaTensorRecipe(const ModelConfig& config);

}  // namespace reflect::cli
