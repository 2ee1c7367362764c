// Writes Hugging Face safetensors checkpoints, streaming: the header first, then each tensor's
// bytes produced chunk by chunk, so writing an 8B model never holds the model in memory.
//
// Files are written under a temporary name and renamed when complete, so an interrupted write
// never leaves a file that looks valid.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace reflect {

// One tensor to write. `fill(first_element, values)` must store elements
// [first_element, first_element + values.size()) of the row-major tensor into `values`; the
// writer calls it over consecutive ranges, converting to `dtype` (f32 -> bf16 rounds to nearest
// even, as torch does).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::function<void(int64_t first_element, std::span<float> values)> fill;

  int64_t NumBytes() const;
};

// Writes one safetensors file holding `tensors` in order (`__metadata__` {"format": "pt"}, which
// transformers expects).
absl::Status WriteSafetensorsFile(const std::filesystem::path& path,
                                  std::span<const TensorToWrite> tensors);

// Writes a model's weights into `directory`: `model.safetensors` when they fit in
// `max_shard_bytes`, else `model-0000i-of-0000n.safetensors` shards (tensors kept in order, a
// shard closed before it would pass the limit; a tensor bigger than the limit gets a shard of its
// own) plus `model.safetensors.index.json` mapping every tensor to its shard.
absl::Status WriteSafetensorsModel(const std::filesystem::path& directory,
                                   std::span<const TensorToWrite> tensors, int64_t max_shard_bytes);

}  // namespace reflect
