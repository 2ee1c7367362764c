// A Hugging Face checkpoint's tensors, memory-mapped: `model.safetensors`, or the shards listed
// in `model.safetensors.index.json`. Nothing is copied; TensorView points into the mapping.
//
// Ownership: a Checkpoint owns its mappings; every TensorView it returns is valid while the
// Checkpoint lives. Thread-safety: const methods may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace reflect {

// A read-only, row-major tensor somewhere in memory.
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;

  int64_t NumElements() const;
  // Element i (row-major flat index) converted to float.
  float At(int64_t flat_index) const;
};

class Checkpoint {
 public:
  // Opens `model_dir`: model.safetensors.index.json when present (every shard it names must
  // exist), else model.safetensors. Validates every header: JSON, dtype, offsets inside the
  // file (a truncated file is an error naming it), shape × dtype size = byte length.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::filesystem::path& model_dir);

  virtual ~Checkpoint() = default;

  // The tensor `name`, which must have exactly `expected_shape`. Errors name the tensor and
  // its file, and give expected vs found.
  virtual absl::StatusOr<TensorView> Get(std::string_view name,
                                         std::span<const int64_t> expected_shape) const = 0;
  virtual bool Contains(std::string_view name) const = 0;
  virtual std::vector<std::string> TensorNames() const = 0;
};

// For Checkpoint implementations' Get: `view` when its shape is `expected_shape`, else
// INVALID_ARGUMENT "tensor '<name>' <where> has shape [..], expected [..]".
absl::StatusOr<TensorView> WithExpectedShape(const TensorView& view, std::string_view name,
                                             std::string_view where,
                                             std::span<const int64_t> expected_shape);

// "[2, 3]".
std::string ShapeText(std::span<const int64_t> shape);

}  // namespace reflect
