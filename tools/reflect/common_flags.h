// Flags shared by several subcommands (absl flags are global to the binary).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);  // a Hugging Face model directory
ABSL_DECLARE_FLAG(uint64_t, seed);      // mkmodel, bench --preset: weights; generate: sampling
ABSL_DECLARE_FLAG(int32_t, threads);    // engine threads; 0: one per core
// A model shape by name (model_presets.h): mkmodel's shape (tiny when unset); bench's random
// weights instead of --model.
ABSL_DECLARE_FLAG(std::optional<std::string>, preset);
