// `reflect mkmodel`: writes a Hugging Face Llama model directory with deterministic synthetic
// weights (tools/reflect/weight_generator.h), for tests and for benchmarks of real shapes.
//
//   reflect mkmodel --preset tiny --out /tmp/tiny [--seed 0] [--dtype bf16]
//   reflect mkmodel --preset 70b --layers 2 --out /tmp/70b-2layers
//
// Output: config.json, generation_config.json, model.safetensors (or shards + index),
// tokenizer.json, tokenizer_config.json. config.json is written last, so a directory that has
// one is complete.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/model_config.h"
#include "common/status_macros.h"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"
#include "tools/reflect/model_presets.h"
#include "tools/reflect/weight_generator.h"
#include "worker/safetensors_writer.h"

ABSL_FLAG(std::string, out, "", "mkmodel: output model directory (created)");
ABSL_FLAG(std::string, dtype, "bf16", "mkmodel: weight dtype on disk: bf16, f16 or f32");
ABSL_FLAG(std::optional<int64_t>, layers, std::nullopt, "mkmodel: num_hidden_layers override");
ABSL_FLAG(std::optional<int64_t>, hidden, std::nullopt, "mkmodel: hidden_size override");
ABSL_FLAG(std::optional<int64_t>, heads, std::nullopt, "mkmodel: num_attention_heads override");
ABSL_FLAG(std::optional<int64_t>, kv_heads, std::nullopt, "mkmodel: num_key_value_heads override");
ABSL_FLAG(std::optional<int64_t>, head_dim, std::nullopt,
          "mkmodel: head_dim override (default: the preset's, or hidden / heads when --hidden or "
          "--heads is given)");
ABSL_FLAG(std::optional<int64_t>, intermediate, std::nullopt,
          "mkmodel: intermediate_size override");
ABSL_FLAG(std::optional<int64_t>, vocab, std::nullopt, "mkmodel: vocab_size override");
ABSL_FLAG(std::optional<double>, rope_theta, std::nullopt, "mkmodel: rope_theta override");
ABSL_FLAG(std::optional<double>, rope_scaling_factor, std::nullopt,
          "mkmodel: llama3 rope_scaling factor override; 0 writes no rope_scaling");
ABSL_FLAG(std::optional<int64_t>, rope_original_max_position, std::nullopt,
          "mkmodel: llama3 rope_scaling original_max_position_embeddings override");
ABSL_FLAG(std::optional<int64_t>, max_position, std::nullopt,
          "mkmodel: max_position_embeddings override");
ABSL_FLAG(std::optional<bool>, tie_embeddings, std::nullopt,
          "mkmodel: tie_word_embeddings override (=true or =false)");
ABSL_FLAG(int64_t, shard_size_mb, 4096,
          "mkmodel: largest safetensors shard in MiB; bigger checkpoints are sharded");
ABSL_FLAG(std::string, tokenizer_dir, "",
          "mkmodel: directory with tokenizer.json and tokenizer_config.json to copy (default: "
          "third_party/llama-3.1-tokenizer, searched upward from the working directory and from "
          "the reflect binary)");

namespace reflect::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kTokenizerSubdirectory[] = "third_party/llama-3.1-tokenizer";

absl::StatusOr<DType> ParseDTypeFlag(const std::string& text) {
  if (text == "bf16") return DType::kBF16;
  if (text == "f16") return DType::kF16;
  if (text == "f32") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: expected bf16, f16 or f32, found \"", text, "\""));
}

std::string TorchDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
  }
  return "";
}

// The preset with the command-line overrides applied, validated by a round trip through
// ParseModelConfig so that what we write is exactly what loaders will accept.
absl::StatusOr<ModelConfig> ConfigFromFlags(DType dtype) {
  REFLECT_ASSIGN_OR_RETURN(ModelConfig config,
                           ModelPresetConfig(absl::GetFlag(FLAGS_preset).value_or("tiny")));
  auto override_with = [](const auto& flag, auto& field) {
    if (auto value = absl::GetFlag(flag); value.has_value()) field = *value;
  };
  override_with(FLAGS_layers, config.num_hidden_layers);
  override_with(FLAGS_hidden, config.hidden_size);
  override_with(FLAGS_heads, config.num_attention_heads);
  override_with(FLAGS_kv_heads, config.num_key_value_heads);
  override_with(FLAGS_intermediate, config.intermediate_size);
  override_with(FLAGS_vocab, config.vocab_size);
  override_with(FLAGS_rope_theta, config.rope_theta);
  override_with(FLAGS_max_position, config.max_position_embeddings);
  override_with(FLAGS_tie_embeddings, config.tie_word_embeddings);
  if (absl::GetFlag(FLAGS_head_dim).has_value()) {
    config.head_dim = *absl::GetFlag(FLAGS_head_dim);
  } else if (absl::GetFlag(FLAGS_hidden).has_value() || absl::GetFlag(FLAGS_heads).has_value()) {
    if (config.num_attention_heads <= 0 || config.hidden_size % config.num_attention_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hidden ", config.hidden_size, " is not a multiple of --heads ",
                       config.num_attention_heads, "; give --head_dim explicitly"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (auto factor = absl::GetFlag(FLAGS_rope_scaling_factor); factor.has_value()) {
    if (*factor == 0) {
      config.rope_scaling.reset();
    } else {
      if (!config.rope_scaling.has_value()) config.rope_scaling = Llama3RopeScaling{};
      config.rope_scaling->factor = *factor;
    }
  }
  if (auto original = absl::GetFlag(FLAGS_rope_original_max_position); original.has_value()) {
    if (!config.rope_scaling.has_value()) {
      return absl::InvalidArgumentError(
          "--rope_original_max_position needs rope scaling (--rope_scaling_factor > 0)");
    }
    config.rope_scaling->original_max_position_embeddings = *original;
  }
  // A vocabulary cut below Llama 3's (engine tests of small shapes) cannot hold its special
  // tokens; such a model has no bos/eos, and its copied tokenizer is not usable with it.
  if (config.bos_token_id.has_value() && *config.bos_token_id >= config.vocab_size) {
    config.bos_token_id.reset();
  }
  std::erase_if(config.eos_token_ids, [&](int32_t id) { return id >= config.vocab_size; });
  config.torch_dtype = TorchDTypeName(dtype);
  return ParseModelConfig(ModelConfigJson(config), "the requested config.json");
}

// third_party/llama-3.1-tokenizer in `start` or one of its parents, if any.
std::optional<fs::path> FindUpward(fs::path start) {
  std::error_code error;
  for (fs::path directory = fs::absolute(start, error); !directory.empty();
       directory = directory.parent_path()) {
    const fs::path candidate = directory / kTokenizerSubdirectory;
    if (fs::exists(candidate / "tokenizer.json", error)) return candidate;
    if (directory == directory.parent_path()) break;
  }
  return std::nullopt;
}

absl::StatusOr<fs::path> TokenizerDirectory() {
  if (!absl::GetFlag(FLAGS_tokenizer_dir).empty())
    return fs::path(absl::GetFlag(FLAGS_tokenizer_dir));
  std::error_code error;
  if (auto found = FindUpward(fs::current_path(error)); found.has_value()) return *found;
  const fs::path executable = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    if (auto found = FindUpward(executable.parent_path()); found.has_value()) return *found;
  }
  return absl::NotFoundError(
      absl::StrCat("cannot find ", kTokenizerSubdirectory,
                   " above the working directory or the reflect binary; pass --tokenizer_dir"));
}

absl::Status WriteTextFile(const fs::path& path, const std::string& text) {
  const fs::path temporary = path.string() + ".partial";
  {
    std::ofstream stream(temporary, std::ios::binary | std::ios::trunc);
    stream << text;
    if (!stream.flush())
      return absl::DataLossError(absl::StrCat(temporary.string(), ": write failed"));
  }
  std::error_code error;
  fs::rename(temporary, path, error);
  if (error) return absl::DataLossError(absl::StrCat(path.string(), ": ", error.message()));
  return absl::OkStatus();
}

// A previous checkpoint in the directory would confuse loaders (a stale index wins over a
// fresh model.safetensors), so it goes first; config.json goes with it, marking the directory
// incomplete until we finish.
absl::Status RemovePreviousModel(const fs::path& directory) {
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    const bool is_model_file =
        name == "config.json" || name.starts_with("model.safetensors") ||
        (name.starts_with("model-") && name.find(".safetensors") != std::string::npos);
    if (is_model_file) fs::remove(entry.path(), error);
    if (error)
      return absl::PermissionDeniedError(
          absl::StrCat(entry.path().string(), ": ", error.message()));
  }
  if (error)
    return absl::PermissionDeniedError(absl::StrCat(directory.string(), ": ", error.message()));
  return absl::OkStatus();
}

absl::Status MakeModel() {
  const fs::path out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  if (absl::GetFlag(FLAGS_shard_size_mb) <= 0) {
    return absl::InvalidArgumentError("--shard_size_mb must be positive");
  }
  REFLECT_ASSIGN_OR_RETURN(DType dtype, ParseDTypeFlag(absl::GetFlag(FLAGS_dtype)));
  REFLECT_ASSIGN_OR_RETURN(ModelConfig config, ConfigFromFlags(dtype));
  REFLECT_ASSIGN_OR_RETURN(fs::path tokenizer_dir, TokenizerDirectory());

  std::error_code error;
  fs::create_directories(out, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat(out.string(), ": ", error.message()));
  REFLECT_RETURN_IF_ERROR(RemovePreviousModel(out));

  const auto start = std::chrono::steady_clock::now();
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  std::vector<TensorToWrite> tensors;
  int64_t total_bytes = 0;
  int64_t total_parameters = 0;
  for (const TensorRecipe& recipe : LlamaTensorRecipe(config)) {
    TensorToWrite tensor{.name = recipe.name, .dtype = dtype, .shape = recipe.shape, .fill = {}};
    tensor.fill = [tensor_seed = TensorSeed(seed, recipe.name), mean = recipe.mean,
                   deviation = recipe.standard_deviation](int64_t first, std::span<float> values) {
      FillUniform(tensor_seed, mean, deviation, first, values);
    };
    total_bytes += tensor.NumBytes();
    total_parameters += tensor.NumBytes() / DTypeSize(dtype);
    tensors.push_back(std::move(tensor));
  }
  REFLECT_RETURN_IF_ERROR(
      WriteSafetensorsModel(out, tensors, absl::GetFlag(FLAGS_shard_size_mb) << 20));

  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(tokenizer_dir / name, out / name, fs::copy_options::overwrite_existing, error);
    // The source may be read-only (a package or a checkout); the copy belongs to the user.
    if (!error) fs::permissions(out / name, fs::perms::owner_write, fs::perm_options::add, error);
    if (error) {
      return absl::NotFoundError(
          absl::StrCat("copying ", (tokenizer_dir / name).string(), ": ", error.message()));
    }
  }
  REFLECT_RETURN_IF_ERROR(
      WriteTextFile(out / "generation_config.json", GenerationConfigJson(config)));
  REFLECT_RETURN_IF_ERROR(WriteTextFile(out / "config.json", ModelConfigJson(config)));

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s: %lld parameters, %.1f MiB of %s weights in %.1f s\n", out.c_str(),
              static_cast<long long>(total_parameters),
              static_cast<double>(total_bytes) / (1 << 20), std::string(DTypeName(dtype)).c_str(),
              seconds);
  return absl::OkStatus();
}

int Run(const std::vector<char*>& positional_args) {
  if (!positional_args.empty()) {
    std::fprintf(stderr, "reflect mkmodel: unexpected argument '%s'\n", positional_args[0]);
    return 2;
  }
  const absl::Status status = MakeModel();
  if (!status.ok()) {
    std::fprintf(stderr, "reflect mkmodel: %s\n", std::string(status.message()).c_str());
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}

const CommandRegistration kRegistration(
    {"mkmodel", "write a Llama model directory with deterministic synthetic weights", &Run});

}  // namespace
}  // namespace reflect::cli
