#include "common/model_config.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace reflect {
namespace {

using Json = nlohmann::json;

// Describes a JSON value for "found ..." in error messages: its type, and the value itself
// when it is short.
std::string Describe(const Json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return absl::StrCat(value.type_name(), " ", text);
}

absl::Status FieldError(const std::string& source, absl::string_view field,
                        absl::string_view expected, const Json& found) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "': expected ",
                                                 expected, ", found ", Describe(found)));
}

absl::StatusOr<Json> ParseJsonObject(const std::string& json_text, const std::string& source) {
  Json document;
  try {
    document = Json::parse(json_text);
  } catch (const Json::parse_error& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": malformed JSON at byte ", error.byte, ": ", error.what()));
  }
  if (!document.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": expected a JSON object at the top level, found ", Describe(document)));
  }
  return document;
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open file"));
  std::ostringstream contents;
  contents << stream.rdbuf();
  if (stream.bad()) return absl::DataLossError(absl::StrCat(path.string(), ": read failed"));
  return contents.str();
}

// Typed field readers over one JSON object. A missing field gives `fallback` when there is
// one, else an error; a present field of the wrong type is always an error.
class FieldReader {
 public:
  FieldReader(const Json& object, std::string source)
      : object_(object), source_(std::move(source)) {}

  const std::string& source() const { return source_; }

  const Json* Find(absl::string_view field) const {
    auto found = object_.find(std::string(field));
    if (found == object_.end() || found->is_null()) return nullptr;
    return &*found;
  }

  absl::StatusOr<int64_t> Integer(absl::string_view field, std::optional<int64_t> fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) {
      if (fallback.has_value()) return *fallback;
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": missing required field '", field, "' (an integer)"));
    }
    if (!value->is_number_integer()) return FieldError(source_, field, "an integer", *value);
    return value->get<int64_t>();
  }

  absl::StatusOr<int64_t> PositiveInteger(absl::string_view field,
                                          std::optional<int64_t> fallback) const {
    REFLECT_ASSIGN_OR_RETURN(int64_t value, Integer(field, fallback));
    if (value <= 0) return FieldError(source_, field, "a positive integer", Json(value));
    return value;
  }

  absl::StatusOr<double> Number(absl::string_view field, std::optional<double> fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) {
      if (fallback.has_value()) return *fallback;
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": missing required field '", field, "' (a number)"));
    }
    if (!value->is_number()) return FieldError(source_, field, "a number", *value);
    return value->get<double>();
  }

  absl::StatusOr<double> PositiveNumber(absl::string_view field,
                                        std::optional<double> fallback) const {
    REFLECT_ASSIGN_OR_RETURN(double value, Number(field, fallback));
    if (!(value > 0)) return FieldError(source_, field, "a positive number", Json(value));
    return value;
  }

  absl::StatusOr<bool> Boolean(absl::string_view field, bool fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) return FieldError(source_, field, "true or false", *value);
    return value->get<bool>();
  }

  absl::StatusOr<std::optional<std::string>> String(absl::string_view field) const {
    const Json* value = Find(field);
    if (value == nullptr) return std::optional<std::string>();
    if (!value->is_string()) return FieldError(source_, field, "a string", *value);
    return std::optional<std::string>(value->get<std::string>());
  }

  // A token id or a list of token ids (eos_token_id is either); absent gives an empty list.
  absl::StatusOr<std::vector<int32_t>> TokenIds(absl::string_view field) const {
    const Json* value = Find(field);
    std::vector<int32_t> ids;
    if (value == nullptr) return ids;
    const absl::string_view expected = "a token id or a list of token ids (non-negative integers)";
    auto append = [&](const Json& item) -> absl::Status {
      if (!item.is_number_integer() || item.get<int64_t>() < 0 || item.get<int64_t>() > INT32_MAX) {
        return FieldError(source_, field, expected, *value);
      }
      ids.push_back(static_cast<int32_t>(item.get<int64_t>()));
      return absl::OkStatus();
    };
    if (value->is_array()) {
      for (const Json& item : *value) REFLECT_RETURN_IF_ERROR(append(item));
    } else {
      REFLECT_RETURN_IF_ERROR(append(*value));
    }
    return ids;
  }

 private:
  const Json& object_;
  std::string source_;
};

// rope_scaling (Llama 3.1 config.json) or rope_parameters (transformers 5): plain RoPE
// ("default" or absent) or "llama3". Other schemes would silently change every logit, so
// they are refused.
absl::StatusOr<std::optional<Llama3RopeScaling>> ParseRopeScaling(const Json& scaling,
                                                                  const std::string& field,
                                                                  const std::string& source) {
  if (!scaling.is_object()) return FieldError(source, field, "an object or null", scaling);
  const FieldReader reader(scaling, absl::StrCat(source, ": ", field));
  REFLECT_ASSIGN_OR_RETURN(std::optional<std::string> rope_type, reader.String("rope_type"));
  if (!rope_type.has_value()) {
    REFLECT_ASSIGN_OR_RETURN(rope_type, reader.String("type"));  // the pre-4.45 spelling
  }
  if (!rope_type.has_value()) {
    // rope_parameters may hold only rope_theta, which means plain RoPE.
    const bool only_theta =
        scaling.empty() || (scaling.size() == 1 && scaling.contains("rope_theta"));
    if (only_theta) return std::optional<Llama3RopeScaling>();
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", field, "' has no 'rope_type' (or 'type')"));
  }
  if (*rope_type == "default") return std::optional<Llama3RopeScaling>();
  if (*rope_type != "llama3") {
    return absl::UnimplementedError(
        absl::StrCat(source, ": field '", field, "': unsupported rope_type \"", *rope_type,
                     "\" (supported: \"llama3\", \"default\", or no rope_scaling)"));
  }
  Llama3RopeScaling result;
  REFLECT_ASSIGN_OR_RETURN(result.factor, reader.PositiveNumber("factor", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(result.low_freq_factor,
                           reader.PositiveNumber("low_freq_factor", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(result.high_freq_factor,
                           reader.PositiveNumber("high_freq_factor", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(
      result.original_max_position_embeddings,
      reader.PositiveInteger("original_max_position_embeddings", std::nullopt));
  if (!(result.high_freq_factor > result.low_freq_factor)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field '", field, "': high_freq_factor (", result.high_freq_factor,
                     ") must be greater than low_freq_factor (", result.low_freq_factor, ")"));
  }
  return std::optional<Llama3RopeScaling>(result);
}

absl::Status CheckArchitecture(const Json& document, const std::string& source) {
  const FieldReader reader(document, source);
  REFLECT_ASSIGN_OR_RETURN(std::optional<std::string> model_type, reader.String("model_type"));
  if (!model_type.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing required field 'model_type' (expected \"llama\")"));
  }
  if (*model_type != "llama") {
    return absl::UnimplementedError(absl::StrCat(source,
                                                 ": unsupported architecture: model_type \"",
                                                 *model_type, "\", expected \"llama\""));
  }
  const Json* architectures = reader.Find("architectures");
  if (architectures == nullptr) return absl::OkStatus();
  if (!architectures->is_array()) {
    return FieldError(source, "architectures", "a list of strings", *architectures);
  }
  for (const Json& name : *architectures) {
    if (name.is_string() && name.get<std::string>() == "LlamaForCausalLM") return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(source, ": unsupported architecture: architectures ",
                                               architectures->dump(),
                                               ", expected [\"LlamaForCausalLM\"]"));
}

absl::Status CheckTokenId(int32_t id, absl::string_view field, int64_t vocab_size,
                          const std::string& source) {
  if (id < vocab_size) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(source, ": field '", field, "': token id ", id,
                                                 " is outside the vocabulary (vocab_size ",
                                                 vocab_size, ")"));
}

absl::Status ParseGenerationConfig(const std::string& json_text, const std::string& source,
                                   ModelDirectoryConfig& config) {
  REFLECT_ASSIGN_OR_RETURN(Json document, ParseJsonObject(json_text, source));
  const FieldReader reader(document, source);
  REFLECT_ASSIGN_OR_RETURN(std::vector<int32_t> eos_ids, reader.TokenIds("eos_token_id"));
  for (int32_t id : eos_ids) {
    REFLECT_RETURN_IF_ERROR(CheckTokenId(id, "eos_token_id", config.model.vocab_size, source));
    std::vector<int32_t>& merged = config.model.eos_token_ids;
    if (std::find(merged.begin(), merged.end(), id) == merged.end()) merged.push_back(id);
  }
  GenerationDefaults& generation = config.generation;
  if (reader.Find("temperature") != nullptr) {
    REFLECT_ASSIGN_OR_RETURN(generation.temperature, reader.Number("temperature", std::nullopt));
    if (*generation.temperature < 0) {
      return FieldError(source, "temperature", "a number >= 0", Json(*generation.temperature));
    }
  }
  if (reader.Find("top_p") != nullptr) {
    REFLECT_ASSIGN_OR_RETURN(generation.top_p, reader.Number("top_p", std::nullopt));
    if (!(*generation.top_p > 0 && *generation.top_p <= 1)) {
      return FieldError(source, "top_p", "a number in (0, 1]", Json(*generation.top_p));
    }
  }
  if (reader.Find("top_k") != nullptr) {
    REFLECT_ASSIGN_OR_RETURN(generation.top_k, reader.Integer("top_k", std::nullopt));
    if (*generation.top_k < 0) {
      return FieldError(source, "top_k", "an integer >= 0", Json(*generation.top_k));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source) {
  REFLECT_ASSIGN_OR_RETURN(Json document, ParseJsonObject(json_text, source));
  REFLECT_RETURN_IF_ERROR(CheckArchitecture(document, source));
  const FieldReader reader(document, source);
  ModelConfig config;
  // Sizes have no safe default; the rest default as transformers' LlamaConfig does, so a
  // config means the same model here and there.
  REFLECT_ASSIGN_OR_RETURN(config.hidden_size, reader.PositiveInteger("hidden_size", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(config.intermediate_size,
                           reader.PositiveInteger("intermediate_size", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(config.num_hidden_layers,
                           reader.PositiveInteger("num_hidden_layers", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(config.num_attention_heads,
                           reader.PositiveInteger("num_attention_heads", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(
      config.num_key_value_heads,
      reader.PositiveInteger("num_key_value_heads", config.num_attention_heads));
  REFLECT_ASSIGN_OR_RETURN(config.vocab_size, reader.PositiveInteger("vocab_size", std::nullopt));
  REFLECT_ASSIGN_OR_RETURN(config.max_position_embeddings,
                           reader.PositiveInteger("max_position_embeddings", 2048));
  REFLECT_ASSIGN_OR_RETURN(config.rms_norm_eps, reader.PositiveNumber("rms_norm_eps", 1e-6));
  REFLECT_ASSIGN_OR_RETURN(config.tie_word_embeddings,
                           reader.Boolean("tie_word_embeddings", false));

  if (config.num_attention_heads % config.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": num_attention_heads (", config.num_attention_heads,
        ") must be a multiple of num_key_value_heads (", config.num_key_value_heads, ")"));
  }
  if (reader.Find("head_dim") != nullptr) {
    REFLECT_ASSIGN_OR_RETURN(config.head_dim, reader.PositiveInteger("head_dim", std::nullopt));
  } else {
    if (config.hidden_size % config.num_attention_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": hidden_size (", config.hidden_size, ") must be a multiple of ",
          "num_attention_heads (", config.num_attention_heads, ") when head_dim is absent"));
    }
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (config.head_dim % 2 != 0) {
    return FieldError(source, "head_dim", "an even number (RoPE rotates pairs)",
                      Json(config.head_dim));
  }

  // transformers 5 folds rope_theta and rope_scaling into rope_parameters.
  if (const Json* parameters = reader.Find("rope_parameters"); parameters != nullptr) {
    if (!parameters->is_object()) {
      return FieldError(source, "rope_parameters", "an object", *parameters);
    }
    const FieldReader rope_reader(*parameters, absl::StrCat(source, ": rope_parameters"));
    REFLECT_ASSIGN_OR_RETURN(config.rope_theta, rope_reader.PositiveNumber("rope_theta", 10000.0));
    REFLECT_ASSIGN_OR_RETURN(config.rope_scaling,
                             ParseRopeScaling(*parameters, "rope_parameters", source));
  } else {
    REFLECT_ASSIGN_OR_RETURN(config.rope_theta, reader.PositiveNumber("rope_theta", 10000.0));
    if (const Json* scaling = reader.Find("rope_scaling"); scaling != nullptr) {
      REFLECT_ASSIGN_OR_RETURN(config.rope_scaling,
                               ParseRopeScaling(*scaling, "rope_scaling", source));
    }
  }

  // transformers 5 writes "dtype" where earlier versions wrote "torch_dtype".
  REFLECT_ASSIGN_OR_RETURN(std::optional<std::string> torch_dtype, reader.String("torch_dtype"));
  if (!torch_dtype.has_value()) {
    REFLECT_ASSIGN_OR_RETURN(torch_dtype, reader.String("dtype"));
  }
  if (torch_dtype.has_value()) {
    if (*torch_dtype != "bfloat16" && *torch_dtype != "float16" && *torch_dtype != "float32") {
      return FieldError(source, "torch_dtype", "\"bfloat16\", \"float16\" or \"float32\"",
                        Json(*torch_dtype));
    }
    config.torch_dtype = *torch_dtype;
  }

  REFLECT_ASSIGN_OR_RETURN(std::vector<int32_t> bos_ids, reader.TokenIds("bos_token_id"));
  if (bos_ids.size() > 1) {
    return FieldError(source, "bos_token_id", "a single token id", document["bos_token_id"]);
  }
  if (!bos_ids.empty()) {
    REFLECT_RETURN_IF_ERROR(CheckTokenId(bos_ids[0], "bos_token_id", config.vocab_size, source));
    config.bos_token_id = bos_ids[0];
  }
  REFLECT_ASSIGN_OR_RETURN(std::vector<int32_t> eos_ids, reader.TokenIds("eos_token_id"));
  for (int32_t id : eos_ids) {
    REFLECT_RETURN_IF_ERROR(CheckTokenId(id, "eos_token_id", config.vocab_size, source));
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) ==
        config.eos_token_ids.end()) {
      config.eos_token_ids.push_back(id);
    }
  }
  return config;
}

absl::StatusOr<ModelDirectoryConfig> LoadModelConfig(const std::filesystem::path& model_dir) {
  const std::filesystem::path config_path = model_dir / "config.json";
  std::error_code error;
  if (!std::filesystem::is_regular_file(config_path, error)) {
    return absl::NotFoundError(absl::StrCat(config_path.string(), ": not found (is ",
                                            model_dir.string(),
                                            " a Hugging Face model directory?)"));
  }
  REFLECT_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path));
  ModelDirectoryConfig result;
  REFLECT_ASSIGN_OR_RETURN(result.model, ParseModelConfig(config_text, config_path.string()));

  const std::filesystem::path generation_path = model_dir / "generation_config.json";
  if (std::filesystem::exists(generation_path, error)) {
    REFLECT_ASSIGN_OR_RETURN(std::string generation_text, ReadFile(generation_path));
    REFLECT_RETURN_IF_ERROR(
        ParseGenerationConfig(generation_text, generation_path.string(), result));
  }
  return result;
}

std::string DefaultServedModelName(const std::filesystem::path& model_dir) {
  std::filesystem::path normal = model_dir.lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  return normal.filename().string();
}

}  // namespace reflect
