// `reflect generate --model DIR (--prompt TEXT | --prompts_file FILE | --prompt_ids 1,2,3)`:
// offline generation through worker/generator.h on the CPU backend, or with --backend cuda on the
// GPU (backend_flags.h). One prompt streams its text
// to stdout as tokens arrive; a prompts file (one JSON string per line) runs as one batch. With
// --json, one line per prompt: {"ids":[...],"text":"...","finish_reason":"stop"|"length"}, the
// generated part only (ids include the eos / stop token that ended it, the text does not).
//
// Sampling: greedy unless --temperature is given; --top_p / --top_k default to the model's
// generation_config.json, and explicit flags always win. Text prompts get <|begin_of_text|>
// first, as Hugging Face does by default; --chat renders a Llama 3.1 user turn (with
// --system TEXT, or the reflection preset with --reflection) and the open assistant header.
//
// Exit codes: 0 done, 2 bad input (flags, model directory, ids), 1 a failure while running.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/chat_template.h"
#include "common/model_config.h"
#include "common/sampling_params.h"
#include "common/status_macros.h"
#include "common/tokenizer.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "tools/reflect/backend_flags.h"
#include "tools/reflect/command.h"
#include "tools/reflect/common_flags.h"
#include "worker/generator.h"

ABSL_FLAG(std::optional<std::string>, prompt, std::nullopt, "generate: the prompt text");
ABSL_FLAG(std::string, prompts_file, "",
          "generate: a file of prompts, one JSON string per line, run as one batch");
ABSL_FLAG(std::string, prompt_ids, "", "generate: the prompt as token ids, e.g. 1,2,3");
ABSL_FLAG(bool, chat, false, "generate: render each prompt as a Llama 3.1 chat user message");
ABSL_FLAG(std::string, system, "", "generate: with --chat, a system message");
ABSL_FLAG(bool, reflection, false,
          "generate: with --chat, use the reflection system prompt (DESIGN §7)");
ABSL_FLAG(int64_t, max_tokens, 128, "generate: tokens to generate per prompt at most");
ABSL_FLAG(std::optional<double>, temperature, std::nullopt,
          "generate: sampling temperature; 0 (the default) is greedy");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt,
          "generate: nucleus sampling mass in (0, 1] (default: generation_config.json, else 1)");
ABSL_FLAG(std::optional<int64_t>, top_k, std::nullopt,
          "generate: keep the k most likely tokens; 0 is off (default: generation_config.json)");
ABSL_FLAG(double, min_p, 0.0, "generate: drop tokens below min_p x the top probability");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past the model's eos tokens");
ABSL_FLAG(bool, json, false, "generate, bench: print JSON lines instead of text");

namespace reflect::cli {
namespace {

constexpr int kBadInput = 2;
constexpr int kFailure = 1;

// A message for stderr and the exit code that goes with it.
struct CommandError {
  std::string message;
  int exit_code = kBadInput;
};

int Report(const CommandError& error) {
  std::fprintf(stderr, "reflect generate: %s\n", error.message.c_str());
  return error.exit_code;
}

std::optional<CommandError> CheckFlags() {
  const int num_prompt_sources = absl::GetFlag(FLAGS_prompt).has_value() +
                                 !absl::GetFlag(FLAGS_prompts_file).empty() +
                                 !absl::GetFlag(FLAGS_prompt_ids).empty();
  if (num_prompt_sources != 1) {
    return CommandError{"give exactly one of --prompt, --prompts_file and --prompt_ids"};
  }
  if (absl::GetFlag(FLAGS_chat) && !absl::GetFlag(FLAGS_prompt_ids).empty()) {
    return CommandError{"--chat renders text; it cannot be used with --prompt_ids"};
  }
  const bool has_system = !absl::GetFlag(FLAGS_system).empty();
  if ((has_system || absl::GetFlag(FLAGS_reflection)) && !absl::GetFlag(FLAGS_chat)) {
    return CommandError{"--system and --reflection need --chat"};
  }
  if (has_system && absl::GetFlag(FLAGS_reflection)) {
    return CommandError{"--system and --reflection both set the system message; give one"};
  }
  if (absl::GetFlag(FLAGS_max_tokens) < 1) {
    return CommandError{
        absl::StrCat("--max_tokens must be at least 1, got ", absl::GetFlag(FLAGS_max_tokens))};
  }
  const std::optional<double> temperature = absl::GetFlag(FLAGS_temperature);
  if (temperature && !(*temperature >= 0.0 && std::isfinite(*temperature))) {
    return CommandError{absl::StrCat("--temperature must be >= 0, got ", *temperature)};
  }
  const std::optional<double> top_p = absl::GetFlag(FLAGS_top_p);
  if (top_p && !(*top_p > 0.0 && *top_p <= 1.0)) {
    return CommandError{absl::StrCat("--top_p must be in (0, 1], got ", *top_p)};
  }
  const std::optional<int64_t> top_k = absl::GetFlag(FLAGS_top_k);
  if (top_k && *top_k < 0) {
    return CommandError{absl::StrCat("--top_k must be >= 0, got ", *top_k)};
  }
  const double min_p = absl::GetFlag(FLAGS_min_p);
  if (!(min_p >= 0.0 && min_p <= 1.0)) {
    return CommandError{absl::StrCat("--min_p must be in [0, 1], got ", min_p)};
  }
  if (const absl::StatusOr<bool> cuda = CudaBackendRequested(); !cuda.ok()) {
    return CommandError{std::string(cuda.status().message())};
  }
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return CommandError{"--model DIR is required"};
  if (!std::filesystem::is_directory(model)) {
    return CommandError{absl::StrCat("--model ", model, " is not a directory")};
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, int64_t vocab_size) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--prompt_ids: '", std::string(part), "' is not a token id in [0, ", vocab_size, ")"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::vector<std::string>> ReadPromptsFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return absl::InvalidArgumentError(absl::StrCat("cannot read --prompts_file ", path));
  std::vector<std::string> prompts;
  std::string line;
  for (int64_t line_number = 1; std::getline(file, line); ++line_number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!value.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " line ", line_number, ": expected a JSON string"));
    }
    prompts.push_back(value.get<std::string>());
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " has no prompts"));
  return prompts;
}

std::vector<int32_t> EncodePrompt(const std::string& text, const Tokenizer& tokenizer,
                                  const ModelConfig& config) {
  if (absl::GetFlag(FLAGS_chat)) {
    std::vector<ChatMessage> messages;
    if (absl::GetFlag(FLAGS_reflection)) {
      messages.push_back({"system", std::string(kReflectionSystemPrompt)});
    } else if (!absl::GetFlag(FLAGS_system).empty()) {
      messages.push_back({"system", absl::GetFlag(FLAGS_system)});
    }
    messages.push_back({"user", text});
    return tokenizer.Encode(RenderLlama31Chat(messages, /*add_generation_prompt=*/true));
  }
  std::vector<int32_t> ids;
  std::optional<int32_t> bos = config.bos_token_id;
  if (!bos) bos = tokenizer.TokenId("<|begin_of_text|>");
  if (bos) ids.push_back(*bos);
  const std::vector<int32_t> text_ids = tokenizer.Encode(text);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
  return ids;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> PromptIds(const Tokenizer& tokenizer,
                                                            const ModelConfig& config) {
  if (!absl::GetFlag(FLAGS_prompt_ids).empty()) {
    REFLECT_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                             ParseIds(absl::GetFlag(FLAGS_prompt_ids), config.vocab_size));
    return std::vector<std::vector<int32_t>>{std::move(ids)};
  }
  std::vector<std::string> texts;
  if (const std::optional<std::string> prompt = absl::GetFlag(FLAGS_prompt)) {
    texts.push_back(*prompt);
  } else {
    REFLECT_ASSIGN_OR_RETURN(texts, ReadPromptsFile(absl::GetFlag(FLAGS_prompts_file)));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& text : texts) prompts.push_back(EncodePrompt(text, tokenizer, config));
  return prompts;
}

SamplingParams ParamsFromFlags(const GenerationDefaults& defaults) {
  SamplingParams params;
  params.temperature = absl::GetFlag(FLAGS_temperature).value_or(0.0);
  params.top_p = absl::GetFlag(FLAGS_top_p).value_or(defaults.top_p.value_or(1.0));
  params.top_k = absl::GetFlag(FLAGS_top_k).value_or(defaults.top_k.value_or(0));
  params.min_p = absl::GetFlag(FLAGS_min_p);
  params.seed = absl::GetFlag(FLAGS_seed);
  params.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  params.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  return params;
}

// The text of a result, without the stop token that ended it.
std::string ResultText(const GenerationRequest& request, const GenerationResult& result,
                       const Tokenizer& tokenizer) {
  StreamingDetokenizer detokenizer(tokenizer);
  std::string text;
  for (int32_t id : result.generated_ids) {
    if (!IsStopToken(request, id)) text += detokenizer.Push(id);
  }
  return ReplaceInvalidUtf8(text + detokenizer.Flush());
}

int RunGenerate(const std::vector<char*>& positional_args) {
  if (!positional_args.empty()) {
    return Report({absl::StrCat("unexpected argument '", positional_args.front(), "'")});
  }
  if (std::optional<CommandError> error = CheckFlags()) return Report(*error);
  const std::filesystem::path model_dir = absl::GetFlag(FLAGS_model);
  const absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return Report({config.status().ToString()});
  const absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(model_dir);
  if (!tokenizer.ok()) return Report({tokenizer.status().ToString()});
  const absl::StatusOr<std::vector<std::vector<int32_t>>> prompts =
      PromptIds(**tokenizer, config->model);
  if (!prompts.ok()) return Report({std::string(prompts.status().message())});

  std::vector<GenerationRequest> requests;
  GeneratorOptions generator_options;
  generator_options.max_model_length = config->model.max_position_embeddings;
  BackendSizing sizing;
  // A pool that holds every request at its longest at once: the whole batch runs together.
  sizing.num_kv_blocks = 0;
  sizing.max_tokens_per_step = generator_options.max_num_batched_tokens;
  sizing.max_sequences_per_step = generator_options.max_num_seqs;
  for (const std::vector<int32_t>& prompt : *prompts) {
    GenerationRequest& request = requests.emplace_back();
    request.prompt_ids = prompt;
    request.params = ParamsFromFlags(config->generation);
    request.eos_token_ids = config->model.eos_token_ids;
    const int64_t length = static_cast<int64_t>(prompt.size()) + request.params.max_tokens;
    sizing.num_kv_blocks += (length + sizing.block_size - 1) / sizing.block_size;
  }
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackendFromFlags(model_dir, sizing);
  if (!backend.ok()) return Report({backend.status().ToString(), kFailure});

  Generator generator(**backend, generator_options);
  const bool stream = !absl::GetFlag(FLAGS_json) && requests.size() == 1;
  StreamingDetokenizer stream_detokenizer(**tokenizer);
  const absl::StatusOr<std::vector<GenerationResult>> results =
      generator.Generate(requests, [&](size_t index, int32_t token) {
        if (!stream || IsStopToken(requests[index], token)) return;
        std::fputs(stream_detokenizer.Push(token).c_str(), stdout);
        std::fflush(stdout);
      });
  if (!results.ok()) {
    const bool bad_input = results.status().code() == absl::StatusCode::kInvalidArgument ||
                           results.status().code() == absl::StatusCode::kResourceExhausted;
    return Report({results.status().ToString(), bad_input ? kBadInput : kFailure});
  }

  if (stream) std::printf("%s\n", stream_detokenizer.Flush().c_str());
  for (size_t index = 0; index < results->size(); ++index) {
    const GenerationResult& result = (*results)[index];
    const std::string text = ResultText(requests[index], result, **tokenizer);
    if (absl::GetFlag(FLAGS_json)) {
      const nlohmann::json line = {
          {"ids", result.generated_ids},
          {"text", text},
          {"finish_reason", std::string(FinishReasonName(result.finish_reason))}};
      std::printf("%s\n", line.dump(-1, ' ', /*ensure_ascii=*/false,
                                    nlohmann::json::error_handler_t::replace)
                              .c_str());
    } else if (!stream) {
      std::printf("=== prompt %zu\n%s\n", index, text.c_str());
    }
    std::fprintf(stderr,
                 "prompt %zu: %zu prompt tokens, %zu generated (%s), first token %.3f s, "
                 "total %.3f s\n",
                 index, requests[index].prompt_ids.size(), result.generated_ids.size(),
                 std::string(FinishReasonName(result.finish_reason)).c_str(),
                 result.time_to_first_token_seconds, result.total_seconds);
  }
  return 0;
}

const CommandRegistration kRegistration({"generate",
                                         "generate text from a prompt (offline, CPU or CUDA)",
                                         &RunGenerate});

}  // namespace
}  // namespace reflect::cli
