#include "router/openai_protocol.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "router/http_errors.h"

namespace reflect {
namespace {

using Json = nlohmann::json;

constexpr int kMaxJsonDepth = 64;
constexpr int32_t kMinPriority = -100;
constexpr int32_t kMaxPriority = 100;

constexpr std::array<std::string_view, 5> kIgnoredFields = {"user", "metadata", "store",
                                                            "service_tier", "parallel_tool_calls"};

// What the field parsers gather before the cross-field checks.
struct ParseState {
  ParseState(CompletionEndpoint endpoint_in, const OpenAiLimits& limits_in,
             CompletionRequest& request_in)
      : endpoint(endpoint_in), limits(limits_in), request(request_in) {}

  CompletionEndpoint endpoint;
  const OpenAiLimits& limits;
  CompletionRequest& request;
  std::optional<std::string> model;
  bool has_messages = false;
  bool has_prompt = false;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> max_completion_tokens;
  bool chat_logprobs = false;
  std::optional<int32_t> top_logprobs;
  bool has_stream_options = false;
  std::optional<int64_t> best_of;
  std::optional<TraceMode> trace_mode;
};

// A short rendering of a JSON value for error messages.
std::string Show(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  constexpr size_t kMaxShown = 40;
  if (text.size() > kMaxShown) text = absl::StrCat(text.substr(0, kMaxShown), "…");
  return text;
}

absl::StatusOr<bool> Bool(const Json& value, const std::string& field) {
  if (!value.is_boolean())
    return InvalidFieldError(field, "must be true or false, got " + Show(value));
  return value.get<bool>();
}

absl::StatusOr<std::string> String(const Json& value, const std::string& field) {
  if (!value.is_string()) return InvalidFieldError(field, "must be a string, got " + Show(value));
  return value.get<std::string>();
}

// A finite number in [low, high] ((low, high] when `low_open`).
absl::StatusOr<double> Real(const Json& value, const std::string& field, double low, double high,
                            bool low_open = false) {
  const std::string range = absl::StrCat(low_open ? "(" : "[", low, ", ", high, "]");
  if (!value.is_number()) {
    return InvalidFieldError(field,
                             absl::StrCat("must be a number in ", range, ", got ", Show(value)));
  }
  const double number = value.get<double>();
  if (!std::isfinite(number) || number < low || number > high || (low_open && number == low)) {
    return InvalidFieldError(field,
                             absl::StrCat("must be a finite number in ", range, ", got ", number));
  }
  return number;
}

// An integer (or a number with an integral value, as JSON encoders may write) in [low, high].
absl::StatusOr<int64_t> Integer(const Json& value, const std::string& field, int64_t low,
                                int64_t high) {
  const std::string range = absl::StrCat("[", low, ", ", high, "]");
  std::optional<int64_t> integer;
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      integer = value.get<int64_t>();
    }
  } else if (value.is_number_integer()) {
    integer = value.get<int64_t>();
  } else if (value.is_number_float()) {
    const double number = value.get<double>();
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 0x1p62) {
      integer = static_cast<int64_t>(number);
    }
  }
  if (!integer || *integer < low || *integer > high) {
    return InvalidFieldError(field,
                             absl::StrCat("must be an integer in ", range, ", got ", Show(value)));
  }
  return *integer;
}

absl::Status TokenIds(const Json& value, const std::string& field, const OpenAiLimits& limits,
                      std::vector<int32_t>& ids) {
  const int64_t highest =
      limits.vocab_size > 0 ? limits.vocab_size - 1 : std::numeric_limits<int32_t>::max();
  for (size_t index = 0; index < value.size(); ++index) {
    REFLECT_ASSIGN_OR_RETURN(
        const int64_t id, Integer(value[index], absl::StrCat(field, "[", index, "]"), 0, highest));
    ids.push_back(static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

// {"type": "text", "text": …} parts, concatenated; other part types are refused.
absl::StatusOr<std::string> MessageContent(const Json& value, const std::string& field) {
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array()) {
    return InvalidFieldError(field, "must be a string or a list of text parts, got " + Show(value));
  }
  std::string content;
  for (size_t index = 0; index < value.size(); ++index) {
    const std::string part_field = absl::StrCat(field, "[", index, "]");
    const Json& part = value[index];
    if (!part.is_object())
      return InvalidFieldError(part_field, "must be an object, got " + Show(part));
    const std::string type_field = absl::StrCat(part_field, ".type");
    REFLECT_ASSIGN_OR_RETURN(const std::string type,
                             String(part.value("type", Json()), type_field));
    if (type != "text") {
      return InvalidFieldError(type_field,
                               "only \"text\" parts are supported, got \"" + type + "\"");
    }
    for (const auto& [key, item] : part.items()) {
      if (key != "type" && key != "text") {
        return InvalidFieldError(absl::StrCat(part_field, ".", key), "unknown field");
      }
    }
    REFLECT_ASSIGN_OR_RETURN(const std::string text,
                             String(part.value("text", Json()), absl::StrCat(part_field, ".text")));
    content += text;
  }
  return content;
}

absl::Status ParseMessages(const Json& value, ParseState& state) {
  if (!value.is_array()) return InvalidFieldError("messages", "must be a list, got " + Show(value));
  if (value.empty()) return InvalidFieldError("messages", "must not be empty");
  if (value.size() > static_cast<size_t>(state.limits.max_messages)) {
    return InvalidFieldError("messages", absl::StrCat("at most ", state.limits.max_messages,
                                                      " messages, got ", value.size()));
  }
  for (size_t index = 0; index < value.size(); ++index) {
    const std::string field = absl::StrCat("messages[", index, "]");
    const Json& message = value[index];
    if (!message.is_object())
      return InvalidFieldError(field, "must be an object, got " + Show(message));
    for (const auto& [key, item] : message.items()) {
      if (key != "role" && key != "content" && key != "name") {
        return InvalidFieldError(absl::StrCat(field, ".", key), "unknown field");
      }
    }
    if (message.contains("name")) {
      REFLECT_RETURN_IF_ERROR(String(message["name"], absl::StrCat(field, ".name")).status());
    }
    const std::string role_field = absl::StrCat(field, ".role");
    REFLECT_ASSIGN_OR_RETURN(std::string role, String(message.value("role", Json()), role_field));
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant") {
      return InvalidFieldError(
          role_field, "must be \"system\", \"user\" or \"assistant\", got \"" + role + "\"");
    }
    REFLECT_ASSIGN_OR_RETURN(std::string content, MessageContent(message.value("content", Json()),
                                                                 absl::StrCat(field, ".content")));
    state.request.messages.push_back(ChatMessage{std::move(role), std::move(content)});
  }
  state.has_messages = true;
  return absl::OkStatus();
}

absl::Status ParsePrompt(const Json& value, ParseState& state) {
  std::vector<CompletionPrompt>& prompts = state.request.prompts;
  constexpr const char* kShapes =
      "must be a string, a list of strings, a list of token ids or a list of token id lists";
  if (value.is_string()) {
    prompts.emplace_back(value.get<std::string>());
  } else if (value.is_array() && !value.empty() && value[0].is_number()) {
    std::vector<int32_t> ids;
    REFLECT_RETURN_IF_ERROR(TokenIds(value, "prompt", state.limits, ids));
    prompts.emplace_back(std::move(ids));
  } else if (value.is_array() && !value.empty()) {
    if (value.size() > static_cast<size_t>(state.limits.max_batch_prompts)) {
      return InvalidFieldError("prompt", absl::StrCat("at most ", state.limits.max_batch_prompts,
                                                      " prompts, got ", value.size()));
    }
    for (size_t index = 0; index < value.size(); ++index) {
      const std::string field = absl::StrCat("prompt[", index, "]");
      const Json& item = value[index];
      if (item.is_string()) {
        prompts.emplace_back(item.get<std::string>());
      } else if (item.is_array()) {
        std::vector<int32_t> ids;
        REFLECT_RETURN_IF_ERROR(TokenIds(item, field, state.limits, ids));
        prompts.emplace_back(std::move(ids));
      } else {
        return InvalidFieldError(field,
                                 "must be a string or a list of token ids, got " + Show(item));
      }
    }
  } else {
    return InvalidFieldError("prompt", absl::StrCat(kShapes, ", got ", Show(value)));
  }
  for (size_t index = 0; index < prompts.size(); ++index) {
    const bool empty =
        std::visit([](const auto& prompt) { return prompt.empty(); }, prompts[index]);
    if (empty) {
      return InvalidFieldError(value.is_array() && !value[0].is_number()
                                   ? absl::StrCat("prompt[", index, "]")
                                   : std::string("prompt"),
                               "must not be empty");
    }
  }
  state.has_prompt = true;
  return absl::OkStatus();
}

absl::Status ParseStop(const Json& value, ParseState& state) {
  std::vector<std::string>& stop = state.request.sampling.stop;
  if (value.is_string()) {
    stop.push_back(value.get<std::string>());
  } else if (value.is_array()) {
    if (value.size() > static_cast<size_t>(state.limits.max_stop_strings)) {
      return InvalidFieldError("stop", absl::StrCat("at most ", state.limits.max_stop_strings,
                                                    " strings, got ", value.size()));
    }
    for (size_t index = 0; index < value.size(); ++index) {
      REFLECT_ASSIGN_OR_RETURN(std::string text,
                               String(value[index], absl::StrCat("stop[", index, "]")));
      stop.push_back(std::move(text));
    }
  } else {
    return InvalidFieldError("stop", "must be a string or a list of strings, got " + Show(value));
  }
  for (size_t index = 0; index < stop.size(); ++index) {
    const std::string field = value.is_array() ? absl::StrCat("stop[", index, "]") : "stop";
    if (stop[index].empty()) return InvalidFieldError(field, "must not be empty");
    if (stop[index].size() > static_cast<size_t>(state.limits.max_stop_string_bytes)) {
      return InvalidFieldError(field, absl::StrCat("at most ", state.limits.max_stop_string_bytes,
                                                   " bytes, got ", stop[index].size()));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseStopTokenIds(const Json& value, ParseState& state) {
  if (!value.is_array()) {
    return InvalidFieldError("stop_token_ids", "must be a list of token ids, got " + Show(value));
  }
  if (value.size() > static_cast<size_t>(state.limits.max_stop_token_ids)) {
    return InvalidFieldError(
        "stop_token_ids",
        absl::StrCat("at most ", state.limits.max_stop_token_ids, " ids, got ", value.size()));
  }
  return TokenIds(value, "stop_token_ids", state.limits, state.request.sampling.stop_token_ids);
}

absl::Status ParseStreamOptions(const Json& value, ParseState& state) {
  if (!value.is_object()) {
    return InvalidFieldError("stream_options", "must be an object, got " + Show(value));
  }
  for (const auto& [key, item] : value.items()) {
    if (key != "include_usage" && key != "continuous_usage_stats") {
      return InvalidFieldError("stream_options." + key, "unknown field");
    }
    if (item.is_null()) continue;
    bool& target =
        key == "include_usage" ? state.request.include_usage : state.request.continuous_usage;
    REFLECT_ASSIGN_OR_RETURN(target, Bool(item, "stream_options." + key));
  }
  state.has_stream_options = true;
  return absl::OkStatus();
}

// Fields of features this server lacks: accepted at their neutral value only.
absl::Status Neutral(const Json& value, const std::string& field, bool neutral,
                     const std::string& feature) {
  if (neutral) return absl::OkStatus();
  return InvalidFieldError(field, absl::StrCat(feature, " not supported, got ", Show(value)));
}

using FieldParser = absl::Status (*)(const Json& value, ParseState& state);

enum Endpoints : unsigned { kChat = 1, kLegacy = 2, kBoth = 3 };

struct FieldRule {
  std::string_view name;
  unsigned endpoints;
  FieldParser parse;  // never sees null: a null field counts as absent
};

#define REFLECT_ASSIGN(target, expression)                   \
  [](const Json& value, ParseState& state) -> absl::Status { \
    REFLECT_ASSIGN_OR_RETURN(target, expression);            \
    return absl::OkStatus();                                 \
  }

const FieldRule kFieldRules[] = {
    {"model", kBoth, REFLECT_ASSIGN(state.model, String(value, "model"))},
    {"messages", kChat, ParseMessages},
    {"prompt", kLegacy, ParsePrompt},
    {"max_tokens", kBoth,
     REFLECT_ASSIGN(state.request.max_tokens,
                    Integer(value, "max_tokens", 1, state.limits.context_length_tokens))},
    {"max_completion_tokens", kChat,
     REFLECT_ASSIGN(state.max_completion_tokens, Integer(value, "max_completion_tokens", 1,
                                                         state.limits.context_length_tokens))},
    {"temperature", kBoth,
     REFLECT_ASSIGN(state.temperature,
                    Real(value, "temperature", 0, state.limits.max_temperature))},
    {"top_p", kBoth, REFLECT_ASSIGN(state.top_p, Real(value, "top_p", 0, 1, /*low_open=*/true))},
    {"n", kBoth, REFLECT_ASSIGN(state.request.n, Integer(value, "n", 1, state.limits.max_n))},
    {"stream", kBoth, REFLECT_ASSIGN(state.request.stream, Bool(value, "stream"))},
    {"stream_options", kBoth, ParseStreamOptions},
    {"stop", kBoth, ParseStop},
    {"seed", kBoth,
     [](const Json& value, ParseState& state) -> absl::Status {
       if (value.is_number_unsigned()) {
         state.request.seed = value.get<uint64_t>();
         return absl::OkStatus();
       }
       REFLECT_ASSIGN_OR_RETURN(state.request.seed,
                                Integer(value, "seed", 0, std::numeric_limits<int64_t>::max()));
       return absl::OkStatus();
     }},
    {"frequency_penalty", kBoth,
     REFLECT_ASSIGN(state.request.sampling.frequency_penalty,
                    Real(value, "frequency_penalty", -2, 2))},
    {"presence_penalty", kBoth,
     REFLECT_ASSIGN(state.request.sampling.presence_penalty,
                    Real(value, "presence_penalty", -2, 2))},
    {"logprobs", kChat, REFLECT_ASSIGN(state.chat_logprobs, Bool(value, "logprobs"))},
    {"logprobs", kLegacy,
     REFLECT_ASSIGN(state.request.logprobs,
                    Integer(value, "logprobs", 0, state.limits.max_logprobs))},
    {"top_logprobs", kChat,
     REFLECT_ASSIGN(state.top_logprobs,
                    Integer(value, "top_logprobs", 0, state.limits.max_logprobs))},
    {"logit_bias", kBoth,
     [](const Json& value, ParseState&) {
       return Neutral(value, "logit_bias", value.is_object() && value.empty(), "logit_bias is");
     }},
    {"response_format", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "response_format", value == Json{{"type", "text"}},
                      "response formats other than {\"type\": \"text\"} are");
     }},
    {"tools", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "tools", value.is_array() && value.empty(), "tools are");
     }},
    {"functions", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "functions", value.is_array() && value.empty(), "functions are");
     }},
    {"tool_choice", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "tool_choice", value == "none", "tools are");
     }},
    {"function_call", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "function_call", value == "none", "functions are");
     }},
    {"modalities", kChat,
     [](const Json& value, ParseState&) {
       return Neutral(value, "modalities", value == Json::array({"text"}),
                      "modalities other than [\"text\"] are");
     }},
    {"echo", kLegacy,
     [](const Json& value, ParseState&) {
       return Neutral(value, "echo", value == false, "echo is");
     }},
    {"suffix", kLegacy,
     [](const Json& value, ParseState&) {
       return Neutral(value, "suffix", value == "", "suffix is");
     }},
    {"best_of", kLegacy,
     REFLECT_ASSIGN(state.best_of, Integer(value, "best_of", 1, state.limits.max_n))},
    {"user", kBoth, [](const Json& value, ParseState&) { return String(value, "user").status(); }},
    {"metadata", kBoth,
     [](const Json& value, ParseState&) {
       return value.is_object()
                  ? absl::OkStatus()
                  : InvalidFieldError("metadata", "must be an object, got " + Show(value));
     }},
    {"store", kBoth, [](const Json& value, ParseState&) { return Bool(value, "store").status(); }},
    {"service_tier", kBoth,
     [](const Json& value, ParseState&) { return String(value, "service_tier").status(); }},
    {"parallel_tool_calls", kChat,
     [](const Json& value, ParseState&) { return Bool(value, "parallel_tool_calls").status(); }},
    // vLLM extensions.
    {"top_k", kBoth,
     [](const Json& value, ParseState& state) -> absl::Status {
       REFLECT_ASSIGN_OR_RETURN(const int64_t top_k,
                                Integer(value, "top_k", -1, std::numeric_limits<int32_t>::max()));
       state.request.sampling.top_k = top_k < 0 ? 0 : top_k;  // -1 and 0: off
       return absl::OkStatus();
     }},
    {"min_p", kBoth, REFLECT_ASSIGN(state.request.sampling.min_p, Real(value, "min_p", 0, 1))},
    {"repetition_penalty", kBoth,
     REFLECT_ASSIGN(state.request.sampling.repetition_penalty,
                    Real(value, "repetition_penalty", 0, 100, /*low_open=*/true))},
    {"ignore_eos", kBoth,
     REFLECT_ASSIGN(state.request.sampling.ignore_eos, Bool(value, "ignore_eos"))},
    {"stop_token_ids", kBoth, ParseStopTokenIds},
    {"priority", kBoth,
     REFLECT_ASSIGN(state.request.priority,
                    Integer(value, "priority", kMinPriority, kMaxPriority))},
    // reflect extensions.
    {"reflection", kChat, REFLECT_ASSIGN(state.request.reflection, Bool(value, "reflection"))},
    {"trace_mode", kBoth,
     [](const Json& value, ParseState& state)
         -> absl::
             Status {
               REFLECT_ASSIGN_OR_RETURN(const std::string mode, String(value, "trace_mode"));
               if (mode == "full") {
                 state.trace_mode = TraceMode::kFull;
               } else if (mode == "output_only") {
                 state.trace_mode = TraceMode::kOutputOnly;
               } else if (mode == "verbatim") {
                 state.trace_mode = TraceMode::kVerbatim;
               } else {
                 return InvalidFieldError(
                     "trace_mode",
                     "must be \"full\", \"output_only\" or \"verbatim\", got \"" + mode + "\"");
               }
               return absl::OkStatus();
             }},
    {"thinking_budget", kBoth,
     REFLECT_ASSIGN(state.request.thinking_budget_tokens,
                    Integer(value, "thinking_budget", 0, state.limits.context_length_tokens))},
};

#undef REFLECT_ASSIGN

// Valid UTF-8 (the JSON parser would refuse it too, without saying where) and nesting no deeper
// than kMaxJsonDepth (the parsed document is walked recursively).
absl::Status CheckBodyShape(std::string_view body) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (size_t offset = 0; offset < body.size();) {
    const unsigned char byte = static_cast<unsigned char>(body[offset]);
    if (byte >= 0x80) {
      const Utf8Character character = ReadUtf8Character(body.substr(offset));
      if (character.kind != Utf8Character::Kind::kValid) {
        return InvalidFieldError("body", absl::StrCat("invalid UTF-8 at byte ", offset));
      }
      offset += character.length;
      escaped = false;
      continue;
    }
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (byte == '\\') {
        escaped = true;
      } else if (byte == '"') {
        in_string = false;
      }
    } else if (byte == '"') {
      in_string = true;
    } else if (byte == '[' || byte == '{') {
      if (++depth > kMaxJsonDepth) {
        return InvalidFieldError(
            "body", absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
      }
    } else if (byte == ']' || byte == '}') {
      --depth;
    }
    ++offset;
  }
  return absl::OkStatus();
}

// The checks that involve several fields, and the defaults.
absl::Status Finish(ParseState& state) {
  CompletionRequest& request = state.request;
  const OpenAiLimits& limits = state.limits;
  const bool chat = state.endpoint == CompletionEndpoint::kChatCompletions;
  if (chat && !state.has_messages) return InvalidFieldError("messages", "required");
  if (!chat && !state.has_prompt) return InvalidFieldError("prompt", "required");

  if (limits.served_model_names.empty()) return absl::UnavailableError("no model is served");
  if (!state.model || state.model->empty()) {
    request.model = limits.served_model_names.front();
  } else if (std::find(limits.served_model_names.begin(), limits.served_model_names.end(),
                       *state.model) == limits.served_model_names.end()) {
    return FieldError(absl::StatusCode::kNotFound, "model",
                      absl::StrCat("the model \"", *state.model, "\" is not served here (served: ",
                                   absl::StrJoin(limits.served_model_names, ", "), ")"));
  } else {
    request.model = *state.model;
  }

  if (state.has_stream_options && !request.stream) {
    return InvalidFieldError("stream_options", "only allowed when stream is true");
  }
  if (state.max_completion_tokens) {
    if (request.max_tokens && *request.max_tokens != *state.max_completion_tokens) {
      return InvalidFieldError(
          "max_completion_tokens",
          absl::StrCat("differs from max_tokens (", *state.max_completion_tokens, " vs ",
                       *request.max_tokens, "); send one of them"));
    }
    request.max_tokens = state.max_completion_tokens;
  }
  if (chat) {
    if (state.top_logprobs && !state.chat_logprobs) {
      return InvalidFieldError("top_logprobs", "requires logprobs: true");
    }
    if (state.chat_logprobs) request.logprobs = state.top_logprobs.value_or(0);
  }
  request.sampling.logprobs = request.logprobs.value_or(0);
  if (state.best_of && *state.best_of != request.n) {
    return InvalidFieldError("best_of",
                             absl::StrCat("must equal n (", request.n, "), got ", *state.best_of));
  }
  request.sampling.temperature = state.temperature.value_or(limits.default_temperature);
  request.sampling.top_p = state.top_p.value_or(limits.default_top_p);
  request.trace_mode = state.trace_mode.value_or(chat ? TraceMode::kFull : TraceMode::kVerbatim);

  if (request.reflection &&
      std::none_of(request.messages.begin(), request.messages.end(),
                   [](const ChatMessage& message) { return message.role == "system"; })) {
    request.messages.insert(request.messages.begin(),
                            ChatMessage{"system", std::string(kReflectionSystemPrompt)});
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(CompletionEndpoint endpoint,
                                                         std::string_view body,
                                                         const OpenAiLimits& limits) {
  REFLECT_RETURN_IF_ERROR(CheckBodyShape(body));
  Json document;
  try {
    document = Json::parse(body);
  } catch (const Json::exception& error) {  // a syntax error, or a number beyond double
    return InvalidFieldError("body", absl::StrCat("invalid JSON: ", error.what()));
  }
  if (!document.is_object()) {
    return InvalidFieldError("body", "must be a JSON object, got " + Show(document));
  }
  CompletionRequest request;
  request.endpoint = endpoint;
  ParseState state(endpoint, limits, request);
  const unsigned mask = endpoint == CompletionEndpoint::kChatCompletions ? kChat : kLegacy;
  for (const auto& [key, value] : document.items()) {
    const FieldRule* rule = nullptr;
    for (const FieldRule& candidate : kFieldRules) {
      if (candidate.name == key && (candidate.endpoints & mask) != 0) rule = &candidate;
    }
    if (rule == nullptr) {
      return InvalidFieldError(key, endpoint == CompletionEndpoint::kChatCompletions
                                        ? "unknown field for /v1/chat/completions"
                                        : "unknown field for /v1/completions");
    }
    if (value.is_null()) continue;
    REFLECT_RETURN_IF_ERROR(rule->parse(value, state));
  }
  REFLECT_RETURN_IF_ERROR(Finish(state));
  return request;
}

absl::StatusOr<SamplingParams> ResolveSampling(const CompletionRequest& request,
                                               int64_t prompt_tokens, const OpenAiLimits& limits,
                                               uint64_t server_seed) {
  const std::string prompt_field =
      request.endpoint == CompletionEndpoint::kChatCompletions ? "messages" : "prompt";
  const int64_t context = limits.context_length_tokens;
  const int64_t max_prompt =
      limits.max_prompt_tokens > 0 ? std::min(limits.max_prompt_tokens, context - 1) : context - 1;
  if (prompt_tokens > max_prompt) {
    return InvalidFieldError(
        prompt_field,
        absl::StrCat("the prompt is ", prompt_tokens, " tokens, more than the limit of ",
                     max_prompt, " (context length ", context, ")"));
  }
  SamplingParams sampling = request.sampling;
  sampling.seed = request.seed.value_or(server_seed);
  if (!request.max_tokens) {
    sampling.max_tokens = context - prompt_tokens;
  } else if (prompt_tokens + *request.max_tokens > context) {
    return InvalidFieldError(
        "max_tokens",
        absl::StrCat("the prompt (", prompt_tokens, " tokens) plus max_tokens (",
                     *request.max_tokens, ") exceed the context length of ", context, " tokens"));
  } else {
    sampling.max_tokens = *request.max_tokens;
  }
  return sampling;
}

std::span<const std::string_view> IgnoredRequestFields() { return kIgnoredFields; }

}  // namespace reflect
