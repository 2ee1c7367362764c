#include "tools/reflect/random_checkpoint.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/reflect/weight_generator.h"

namespace reflect::cli {
namespace {

constexpr int64_t kChunkElements = int64_t{1} << 20;
constexpr int64_t kTensorAlignment = 64;  // bytes between tensor starts: a cache line

class RandomCheckpoint final : public Checkpoint {
 public:
  RandomCheckpoint(std::unique_ptr<std::byte[]> storage, std::map<std::string, TensorView> tensors)
      : storage_(std::move(storage)), tensors_(std::move(tensors)) {}

  absl::StatusOr<TensorView> Get(std::string_view name,
                                 std::span<const int64_t> expected_shape) const override {
    auto found = tensors_.find(std::string(name));
    if (found == tensors_.end()) {
      return absl::NotFoundError(
          absl::StrCat("tensor '", std::string(name), "' not found in the random weights"));
    }
    return WithExpectedShape(found->second, name, "of the random weights", expected_shape);
  }

  bool Contains(std::string_view name) const override {
    return tensors_.contains(std::string(name));
  }

  std::vector<std::string> TensorNames() const override {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& [name, view] : tensors_) names.push_back(name);
    return names;  // std::map: sorted
  }

 private:
  std::unique_ptr<std::byte[]> storage_;
  std::map<std::string, TensorView> tensors_;
};

// One chunk of one tensor to generate.
struct Chunk {
  const TensorRecipe* recipe = nullptr;
  uint64_t tensor_seed = 0;
  std::byte* destination = nullptr;  // the tensor's first byte
  int64_t first_element = 0;
  int64_t num_elements = 0;
};

// Scratch space of one generator thread.
struct Scratch {
  std::vector<float> values;
  std::vector<uint16_t> converted;
};

void Generate(const Chunk& chunk, DType dtype, Scratch& scratch) {
  std::vector<float>& values = scratch.values;
  values.resize(static_cast<size_t>(chunk.num_elements));
  FillUniform(chunk.tensor_seed, chunk.recipe->mean, chunk.recipe->standard_deviation,
              chunk.first_element, values);
  std::byte* out = chunk.destination + chunk.first_element * DTypeSize(dtype);
  if (dtype == DType::kF32) {
    std::memcpy(out, values.data(), values.size() * sizeof(float));
    return;
  }
  std::vector<uint16_t>& converted = scratch.converted;
  converted.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    converted[i] = dtype == DType::kBF16 ? F32ToBf16(values[i]) : F32ToF16(values[i]);
  }
  std::memcpy(out, converted.data(), converted.size() * sizeof(uint16_t));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> MakeRandomCheckpoint(const ModelConfig& config,
                                                                 uint64_t seed, DType dtype,
                                                                 int num_threads) {
  const std::vector<TensorRecipe> recipe = LlamaTensorRecipe(config);
  std::vector<int64_t> offsets;
  int64_t total_bytes = 0;
  for (const TensorRecipe& tensor : recipe) {
    int64_t elements = 1;
    for (int64_t dimension : tensor.shape) elements *= dimension;
    offsets.push_back(total_bytes);
    total_bytes +=
        (elements * DTypeSize(dtype) + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
  }
  std::unique_ptr<std::byte[]> storage;
  try {
    // Not value-initialized: the generator threads touch every page first, in parallel.
    storage = std::make_unique_for_overwrite<std::byte[]>(static_cast<size_t>(total_bytes));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", total_bytes, " bytes of host memory for random weights"));
  }

  std::map<std::string, TensorView> tensors;
  std::vector<Chunk> chunks;
  for (size_t index = 0; index < recipe.size(); ++index) {
    const TensorRecipe& tensor = recipe[index];
    TensorView view{.dtype = dtype, .shape = tensor.shape, .data = storage.get() + offsets[index]};
    const int64_t elements = view.NumElements();
    const uint64_t tensor_seed = TensorSeed(seed, tensor.name);
    for (int64_t first = 0; first < elements; first += kChunkElements) {
      chunks.push_back({.recipe = &tensor,
                        .tensor_seed = tensor_seed,
                        .destination = storage.get() + offsets[index],
                        .first_element = first,
                        .num_elements = std::min(kChunkElements, elements - first)});
    }
    tensors.emplace(tensor.name, std::move(view));
  }

  const int threads = num_threads > 0
                          ? num_threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::atomic<size_t> next_chunk{0};
  std::vector<std::thread> workers;
  for (int thread = 0; thread < threads; ++thread) {
    workers.emplace_back([&] {
      Scratch scratch;
      for (size_t index = next_chunk++; index < chunks.size(); index = next_chunk++) {
        Generate(chunks[index], dtype, scratch);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  return std::make_unique<RandomCheckpoint>(std::move(storage), std::move(tensors));
}

}  // namespace reflect::cli
