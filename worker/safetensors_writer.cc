#include "worker/safetensors_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

using Json = nlohmann::json;

// Elements generated and written per chunk: 4 MiB of floats keeps memory flat and writes large.
constexpr int64_t kChunkElements = 1 << 20;

struct CloseFile {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

absl::Status WriteBytes(std::FILE* file, const void* bytes, size_t size,
                        const std::filesystem::path& path) {
  if (size > 0 && std::fwrite(bytes, 1, size, file) != size) {
    return absl::DataLossError(
        absl::StrCat(path.string(), ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status WriteTensorData(std::FILE* file, const TensorToWrite& tensor,
                             const std::filesystem::path& path) {
  const int64_t num_elements = tensor.NumBytes() / DTypeSize(tensor.dtype);
  std::vector<float> values(std::min(num_elements, kChunkElements));
  std::vector<uint16_t> halves(tensor.dtype == DType::kF32 ? 0 : values.size());
  for (int64_t first = 0; first < num_elements; first += kChunkElements) {
    const int64_t count = std::min(kChunkElements, num_elements - first);
    const std::span<float> chunk(values.data(), static_cast<size_t>(count));
    tensor.fill(first, chunk);
    if (tensor.dtype == DType::kF32) {
      REFLECT_RETURN_IF_ERROR(WriteBytes(file, chunk.data(), chunk.size_bytes(), path));
      continue;
    }
    for (int64_t i = 0; i < count; ++i) {
      halves[i] = tensor.dtype == DType::kBF16 ? F32ToBf16(chunk[i]) : F32ToF16(chunk[i]);
    }
    REFLECT_RETURN_IF_ERROR(
        WriteBytes(file, halves.data(), static_cast<size_t>(count) * sizeof(uint16_t), path));
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path temporary = path.string() + ".partial";
  {
    std::ofstream stream(temporary, std::ios::binary | std::ios::trunc);
    stream << text;
    if (!stream.flush()) {
      return absl::DataLossError(absl::StrCat(temporary.string(), ": write failed"));
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) return absl::DataLossError(absl::StrCat(path.string(), ": ", error.message()));
  return absl::OkStatus();
}

}  // namespace

int64_t TensorToWrite::NumBytes() const {
  int64_t count = DTypeSize(dtype);
  for (int64_t dimension : shape) count *= dimension;
  return count;
}

absl::Status WriteSafetensorsFile(const std::filesystem::path& path,
                                  std::span<const TensorToWrite> tensors) {
  // nlohmann's ordered_json keeps the header in file order, which makes files easy to read.
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  int64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    const int64_t size = tensor.NumBytes();
    header[tensor.name] = {{"dtype", std::string(DTypeName(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_text = header.dump();
  // Padding the header to 8 bytes aligns every tensor to 8 in the file, as the Python
  // safetensors writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  const std::filesystem::path temporary = path.string() + ".partial";
  std::unique_ptr<std::FILE, CloseFile> file(std::fopen(temporary.c_str(), "wb"));
  if (file == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(temporary.string(), ": cannot create: ", std::strerror(errno)));
  }
  unsigned char length_bytes[8];
  uint64_t header_length = header_text.size();
  for (unsigned char& byte : length_bytes) {
    byte = static_cast<unsigned char>(header_length & 0xff);
    header_length >>= 8;
  }
  REFLECT_RETURN_IF_ERROR(WriteBytes(file.get(), length_bytes, sizeof(length_bytes), temporary));
  REFLECT_RETURN_IF_ERROR(
      WriteBytes(file.get(), header_text.data(), header_text.size(), temporary));
  for (const TensorToWrite& tensor : tensors) {
    REFLECT_RETURN_IF_ERROR(WriteTensorData(file.get(), tensor, temporary));
  }
  if (std::fclose(file.release()) != 0) {
    return absl::DataLossError(
        absl::StrCat(temporary.string(), ": close failed: ", std::strerror(errno)));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) return absl::DataLossError(absl::StrCat(path.string(), ": ", error.message()));
  return absl::OkStatus();
}

absl::Status WriteSafetensorsModel(const std::filesystem::path& directory,
                                   std::span<const TensorToWrite> tensors,
                                   int64_t max_shard_bytes) {
  // Shards as [first, last) ranges of `tensors`.
  std::vector<std::pair<size_t, size_t>> shards;
  int64_t shard_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t size = tensors[i].NumBytes();
    if (shards.empty() || (shard_bytes > 0 && shard_bytes + size > max_shard_bytes)) {
      shards.emplace_back(i, i);
      shard_bytes = 0;
    }
    shards.back().second = i + 1;
    shard_bytes += size;
  }
  if (shards.size() <= 1) return WriteSafetensorsFile(directory / "model.safetensors", tensors);

  Json weight_map = Json::object();
  int64_t total_size = 0;
  for (size_t shard = 0; shard < shards.size(); ++shard) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", shard + 1, shards.size());
    const auto [first, last] = shards[shard];
    REFLECT_RETURN_IF_ERROR(
        WriteSafetensorsFile(directory / name, tensors.subspan(first, last - first)));
    for (size_t i = first; i < last; ++i) {
      weight_map[tensors[i].name] = name;
      total_size += tensors[i].NumBytes();
    }
  }
  const Json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  return WriteTextFile(directory / "model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace reflect
