#include "worker/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

using Json = nlohmann::json;

// A safetensors header is JSON describing the tensors; real ones are a few hundred KB even for
// 70B models. The cap stops a corrupt length from asking for gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100 << 20;

absl::string_view View(std::string_view text) { return {text.data(), text.size()}; }

// A whole file mapped read-only. Private mapping: nothing we do can reach the file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::filesystem::path& path) {
    const int descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (descriptor < 0) {
      const int error = errno;
      const std::string message = absl::StrCat(path.string(), ": cannot open: ", strerror(error));
      return error == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
    }
    struct stat info {};
    if (::fstat(descriptor, &info) != 0) {
      const int error = errno;
      ::close(descriptor);
      return absl::InternalError(absl::StrCat(path.string(), ": fstat: ", strerror(error)));
    }
    auto file =
        std::unique_ptr<MappedFile>(new MappedFile(path, static_cast<size_t>(info.st_size)));
    if (file->size_ > 0) {
      void* address = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, descriptor, 0);
      if (address == MAP_FAILED) {
        const int error = errno;
        ::close(descriptor);
        return absl::ResourceExhaustedError(
            absl::StrCat(path.string(), ": mmap of ", file->size_, " bytes: ", strerror(error)));
      }
      file->data_ = static_cast<const std::byte*>(address);
    }
    ::close(descriptor);  // the mapping keeps the file alive
    return file;
  }

  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile(std::filesystem::path path, size_t size) : path_(std::move(path)), size_(size) {}

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

struct TensorEntry {
  TensorView view;
  const MappedFile* file = nullptr;
};

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return absl::UnimplementedError(name);
}

// Parses one tensor's header entry; its data starts at byte `data_start` of `file`.
absl::StatusOr<TensorEntry> ParseTensorEntry(const std::string& name, const Json& entry,
                                             const MappedFile& file, uint64_t data_start) {
  const std::string where = absl::StrCat(file.path().string(), ": tensor '", name, "'");
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected an object, found ", entry.type_name()));
  }
  auto dtype_field = entry.find("dtype");
  if (dtype_field == entry.end() || !dtype_field->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing string field 'dtype'"));
  }
  auto dtype = ParseDType(dtype_field->get<std::string>());
  if (!dtype.ok()) {
    return absl::UnimplementedError(absl::StrCat(where, ": unsupported dtype ",
                                                 dtype_field->get<std::string>(),
                                                 " (supported: F32, F16, BF16)"));
  }
  TensorEntry result;
  result.file = &file;
  result.view.dtype = *dtype;
  auto shape_field = entry.find("shape");
  if (shape_field == entry.end() || !shape_field->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing list field 'shape'"));
  }
  uint64_t num_elements = 1;
  for (const Json& dimension : *shape_field) {
    if (!dimension.is_number_integer() || dimension.get<int64_t>() < 0 ||
        dimension.get<int64_t>() > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": bad shape ", shape_field->dump()));
    }
    result.view.shape.push_back(dimension.get<int64_t>());
    num_elements *= static_cast<uint64_t>(dimension.get<int64_t>());
    if (num_elements > (uint64_t{1} << 40)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": shape ", shape_field->dump(), " is implausibly large"));
    }
  }
  auto offsets_field = entry.find("data_offsets");
  if (offsets_field == entry.end() || !offsets_field->is_array() || offsets_field->size() != 2 ||
      !(*offsets_field)[0].is_number_unsigned() || !(*offsets_field)[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": 'data_offsets' must be [begin, end] (non-negative integers)"));
  }
  const uint64_t begin = (*offsets_field)[0].get<uint64_t>();
  const uint64_t end = (*offsets_field)[1].get<uint64_t>();
  if (begin > end) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] end before they begin"));
  }
  const uint64_t expected_bytes = num_elements * DTypeSize(*dtype);
  if (end - begin != expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": data_offsets span ", end - begin, " bytes, but shape ",
                     ShapeText(result.view.shape), " of ", dtype_field->get<std::string>(),
                     " needs ", expected_bytes));
  }
  if (data_start + end > file.size()) {
    return absl::DataLossError(absl::StrCat(file.path().string(), ": file is truncated: tensor '",
                                            name, "' ends at byte ", data_start + end,
                                            " but the file has ", file.size(), " bytes"));
  }
  result.view.data = file.data() + data_start + begin;
  return result;
}

absl::Status ParseSafetensorsFile(const MappedFile& file,
                                  absl::flat_hash_map<std::string, TensorEntry>& tensors) {
  const std::string path = file.path().string();
  if (file.size() < 8) {
    return absl::DataLossError(absl::StrCat(path, ": file is truncated: ", file.size(),
                                            " bytes, a safetensors file has at least 8"));
  }
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) {
    header_bytes = (header_bytes << 8) | std::to_integer<uint64_t>(file.data()[i]);
  }
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " bytes is not sane (limit ", kMaxHeaderBytes,
                                                   "); not a safetensors file?"));
  }
  if (8 + header_bytes > file.size()) {
    return absl::DataLossError(absl::StrCat(path, ": file is truncated: header needs ",
                                            8 + header_bytes, " bytes but the file has ",
                                            file.size()));
  }
  const char* header_text = reinterpret_cast<const char*>(file.data() + 8);
  Json header;
  try {
    header = Json::parse(header_text, header_text + header_bytes);
  } catch (const Json::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": malformed safetensors header JSON at byte ", error.byte, ": ", error.what()));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": safetensors header must be a JSON object, found ", header.type_name()));
  }
  for (auto item = header.begin(); item != header.end(); ++item) {
    if (item.key() == "__metadata__") continue;
    REFLECT_ASSIGN_OR_RETURN(TensorEntry entry,
                             ParseTensorEntry(item.key(), item.value(), file, 8 + header_bytes));
    if (!tensors.emplace(item.key(), std::move(entry)).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", item.key(), "' appears in more than one safetensors file"));
    }
  }
  return absl::OkStatus();
}

class SafetensorsCheckpoint final : public Checkpoint {
 public:
  explicit SafetensorsCheckpoint(std::filesystem::path model_dir)
      : model_dir_(std::move(model_dir)) {}

  absl::Status AddFile(const std::filesystem::path& path) {
    REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
    REFLECT_RETURN_IF_ERROR(ParseSafetensorsFile(*file, tensors_));
    files_.push_back(std::move(file));
    return absl::OkStatus();
  }

  // The tensors the index promises must be where it says.
  absl::Status CheckWeightMap(const std::map<std::string, std::string>& weight_map,
                              const std::filesystem::path& index_path) const {
    for (const auto& [name, shard] : weight_map) {
      auto found = tensors_.find(name);
      if (found == tensors_.end() || found->second.file->path().filename() != shard) {
        return absl::NotFoundError(
            absl::StrCat(index_path.string(), ": tensor '", name, "' is not in its shard ", shard));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<TensorView> Get(std::string_view name,
                                 std::span<const int64_t> expected_shape) const override {
    auto found = tensors_.find(std::string(name));
    if (found == tensors_.end()) {
      return absl::NotFoundError(
          absl::StrCat("tensor '", View(name), "' not found in checkpoint ", model_dir_.string()));
    }
    return WithExpectedShape(found->second.view, name,
                             absl::StrCat("in ", found->second.file->path().string()),
                             expected_shape);
  }

  bool Contains(std::string_view name) const override {
    return tensors_.contains(std::string(name));
  }

  std::vector<std::string> TensorNames() const override {
    std::vector<std::string> names;
    names.reserve(tensors_.size());
    for (const auto& [name, entry] : tensors_) names.push_back(name);
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path model_dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  absl::flat_hash_map<std::string, TensorEntry> tensors_;
};

// Reads "weight_map" of model.safetensors.index.json: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadWeightMap(
    const std::filesystem::path& index_path) {
  std::ifstream stream(index_path, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat(index_path.string(), ": cannot open"));
  std::ostringstream text;
  text << stream.rdbuf();
  Json index;
  try {
    index = Json::parse(text.str());
  } catch (const Json::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": malformed JSON at byte ",
                                                   error.byte, ": ", error.what()));
  }
  auto weight_map = index.is_object() ? index.find("weight_map") : index.end();
  if (weight_map == index.end() || !weight_map->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path.string(), ": missing object field 'weight_map'"));
  }
  std::map<std::string, std::string> result;
  for (auto item = weight_map->begin(); item != weight_map->end(); ++item) {
    if (!item.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": weight_map['",
                                                     item.key(), "'] must be a file name"));
    }
    const std::string shard = item.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": weight_map['", item.key(), "'] = \"", shard,
                       "\" is not a plain file name in the model directory"));
    }
    result.emplace(item.key(), shard);
  }
  return result;
}

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t count = 1;
  for (int64_t dimension : shape) count *= dimension;
  return count;
}

float TensorView::At(int64_t flat_index) const {
  // Tensors in a safetensors file need not be aligned to their element size.
  const std::byte* element = data + flat_index * DTypeSize(dtype);
  if (dtype == DType::kF32) {
    float value;
    std::memcpy(&value, element, sizeof(value));
    return value;
  }
  uint16_t bits;
  std::memcpy(&bits, element, sizeof(bits));
  return dtype == DType::kBF16 ? Bf16ToF32(bits) : F16ToF32(bits);
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::filesystem::path& model_dir) {
  auto checkpoint = std::make_unique<SafetensorsCheckpoint>(model_dir);
  const std::filesystem::path index_path = model_dir / "model.safetensors.index.json";
  std::error_code error;
  if (std::filesystem::exists(index_path, error)) {
    REFLECT_ASSIGN_OR_RETURN(auto weight_map, ReadWeightMap(index_path));
    std::vector<std::string> shards;
    for (const auto& [name, shard] : weight_map) shards.push_back(shard);
    std::sort(shards.begin(), shards.end());
    shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
    for (const std::string& shard : shards) {
      if (!std::filesystem::exists(model_dir / shard, error)) {
        return absl::NotFoundError(
            absl::StrCat(index_path.string(), " names shard ", shard, ", which does not exist"));
      }
      REFLECT_RETURN_IF_ERROR(checkpoint->AddFile(model_dir / shard));
    }
    REFLECT_RETURN_IF_ERROR(checkpoint->CheckWeightMap(weight_map, index_path));
    return checkpoint;
  }
  const std::filesystem::path single_path = model_dir / "model.safetensors";
  if (!std::filesystem::exists(single_path, error)) {
    return absl::NotFoundError(absl::StrCat("no checkpoint in ", model_dir.string(),
                                            ": neither model.safetensors nor "
                                            "model.safetensors.index.json exists"));
  }
  REFLECT_RETURN_IF_ERROR(checkpoint->AddFile(single_path));
  return checkpoint;
}

absl::StatusOr<TensorView> WithExpectedShape(const TensorView& view, std::string_view name,
                                             std::string_view where,
                                             std::span<const int64_t> expected_shape) {
  if (std::equal(view.shape.begin(), view.shape.end(), expected_shape.begin(),
                 expected_shape.end())) {
    return view;
  }
  return absl::InvalidArgumentError(absl::StrCat("tensor '", View(name), "' ", View(where),
                                                 " has shape ", ShapeText(view.shape),
                                                 ", expected ", ShapeText(expected_shape)));
}

std::string ShapeText(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace reflect
