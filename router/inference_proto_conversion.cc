#include "router/inference_proto_conversion.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "router/http_errors.h"

namespace reflect {
namespace {

constexpr int32_t kMinPriority = -100;
constexpr int32_t kMaxPriority = 100;
constexpr size_t kMaxRequestIdLength = 128;

// A finite number in [low, high] (or (low, high] when `low_open`).
absl::Status CheckReal(double value, std::string_view field, double low, double high,
                       bool low_open = false) {
  const bool inside =
      std::isfinite(value) && (low_open ? value > low : value >= low) && value <= high;
  if (inside) return absl::OkStatus();
  return InvalidFieldError(field, absl::StrFormat("must be a finite number in %c%g, %g], got %g",
                                                  low_open ? '(' : '[', low, high, value));
}

absl::Status CheckInteger(int64_t value, std::string_view field, int64_t low, int64_t high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return InvalidFieldError(
      field, absl::StrCat("must be an integer in [", low, ", ", high, "], got ", value));
}

// Each generator is used by one thread only; seeded from the OS once per thread.
std::mt19937_64& ThreadGenerator() {
  thread_local std::mt19937_64 generator((static_cast<uint64_t>(std::random_device()()) << 32) ^
                                         std::random_device()());
  return generator;
}

std::string_view RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_SYSTEM:
      return "system";
    case v1::ROLE_USER:
      return "user";
    case v1::ROLE_ASSISTANT:
      return "assistant";
    default:
      return "";
  }
}

}  // namespace

absl::StatusOr<std::string> ResolveModelName(std::string_view requested,
                                             const OpenAiLimits& limits) {
  if (limits.served_model_names.empty()) return absl::UnavailableError("no model is served");
  if (requested.empty()) return limits.served_model_names.front();
  if (std::find(limits.served_model_names.begin(), limits.served_model_names.end(), requested) ==
      limits.served_model_names.end()) {
    return FieldError(
        absl::StatusCode::kNotFound, "model",
        absl::StrCat("the model \"", std::string(requested), "\" is not served here (served: ",
                     absl::StrJoin(limits.served_model_names, ", "), ")"));
  }
  return std::string(requested);
}

std::string NewRequestId() { return absl::StrFormat("%016x", ThreadGenerator()()); }

uint64_t NewSeed() { return ThreadGenerator()(); }

absl::StatusOr<std::string> ResolveRequestId(std::string_view request_id) {
  if (request_id.empty()) return NewRequestId();
  if (request_id.size() > kMaxRequestIdLength) {
    return InvalidFieldError("request_id", absl::StrCat("at most ", kMaxRequestIdLength,
                                                        " characters, got ", request_id.size()));
  }
  for (const char character : request_id) {
    // Printable ASCII only: the id is written into log lines and HTTP ids unescaped.
    if (character < 0x20 || character > 0x7e) {
      return InvalidFieldError("request_id", "must be printable ASCII");
    }
  }
  return std::string(request_id);
}

absl::Status ValidatePriority(int32_t priority) {
  return CheckInteger(priority, "priority", kMinPriority, kMaxPriority);
}

absl::StatusOr<ReflectionSettings> ReflectionFromProto(const v1::ReflectionOptions& reflection,
                                                       const OpenAiLimits& limits) {
  ReflectionSettings settings;
  switch (reflection.trace_mode()) {
    case v1::TRACE_MODE_UNSPECIFIED:
    case v1::TRACE_MODE_FULL:
      settings.trace_mode = TraceMode::kFull;
      break;
    case v1::TRACE_MODE_OUTPUT_ONLY:
      settings.trace_mode = TraceMode::kOutputOnly;
      break;
    case v1::TRACE_MODE_VERBATIM:
      settings.trace_mode = TraceMode::kVerbatim;
      break;
    default:
      return InvalidFieldError("reflection.trace_mode",
                               absl::StrCat("unknown trace mode ", reflection.trace_mode()));
  }
  if (absl::Status status =
          CheckInteger(reflection.thinking_budget_tokens(), "reflection.thinking_budget_tokens", 0,
                       limits.context_length_tokens);
      !status.ok()) {
    return status;
  }
  settings.thinking_budget_tokens = reflection.thinking_budget_tokens();
  return settings;
}

absl::StatusOr<SamplingParams> SamplingFromProto(const v1::SamplingParams& proto,
                                                 const OpenAiLimits& limits) {
  SamplingParams sampling;
  sampling.temperature = proto.has_temperature() ? proto.temperature() : limits.default_temperature;
  sampling.top_p = proto.has_top_p() ? proto.top_p() : limits.default_top_p;
  sampling.top_k = proto.top_k();
  sampling.min_p = proto.min_p();
  sampling.repetition_penalty = proto.has_repetition_penalty() ? proto.repetition_penalty() : 1.0;
  sampling.frequency_penalty = proto.frequency_penalty();
  sampling.presence_penalty = proto.presence_penalty();
  sampling.ignore_eos = proto.ignore_eos();
  sampling.logprobs = proto.logprobs();

  const absl::Status checks[] = {
      CheckReal(sampling.temperature, "sampling.temperature", 0, limits.max_temperature),
      CheckReal(sampling.top_p, "sampling.top_p", 0, 1, /*low_open=*/true),
      CheckInteger(sampling.top_k, "sampling.top_k", 0, std::numeric_limits<int32_t>::max()),
      CheckReal(sampling.min_p, "sampling.min_p", 0, 1),
      CheckReal(sampling.repetition_penalty, "sampling.repetition_penalty", 0, 100,
                /*low_open=*/true),
      CheckReal(sampling.frequency_penalty, "sampling.frequency_penalty", -2, 2),
      CheckReal(sampling.presence_penalty, "sampling.presence_penalty", -2, 2),
      CheckInteger(sampling.logprobs, "sampling.logprobs", 0, limits.max_logprobs),
  };
  for (const absl::Status& status : checks) {
    if (!status.ok()) return status;
  }
  if (proto.has_max_tokens()) {
    if (absl::Status status = CheckInteger(proto.max_tokens(), "sampling.max_tokens", 1,
                                           limits.context_length_tokens);
        !status.ok()) {
      return status;
    }
  }

  if (proto.stop_size() > limits.max_stop_strings) {
    return InvalidFieldError("sampling.stop", absl::StrCat("at most ", limits.max_stop_strings,
                                                           " strings, got ", proto.stop_size()));
  }
  for (int index = 0; index < proto.stop_size(); ++index) {
    const std::string& stop = proto.stop(index);
    const std::string field = absl::StrCat("sampling.stop[", index, "]");
    if (stop.empty()) return InvalidFieldError(field, "must not be empty");
    if (static_cast<int64_t>(stop.size()) > limits.max_stop_string_bytes) {
      return InvalidFieldError(field, absl::StrCat("at most ", limits.max_stop_string_bytes,
                                                   " bytes, got ", stop.size()));
    }
    sampling.stop.push_back(stop);
  }

  if (proto.stop_token_ids_size() > limits.max_stop_token_ids) {
    return InvalidFieldError("sampling.stop_token_ids",
                             absl::StrCat("at most ", limits.max_stop_token_ids, " ids, got ",
                                          proto.stop_token_ids_size()));
  }
  for (int index = 0; index < proto.stop_token_ids_size(); ++index) {
    const int32_t id = proto.stop_token_ids(index);
    if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size)) {
      return InvalidFieldError(
          absl::StrCat("sampling.stop_token_ids[", index, "]"),
          absl::StrCat("must be a token id in [0, ", limits.vocab_size, "), got ", id));
    }
    sampling.stop_token_ids.push_back(id);
  }
  return sampling;
}

absl::Status ResolvePromptAndSampling(std::string_view prompt_field,
                                      const std::vector<int32_t>& prompt_token_ids,
                                      const v1::SamplingParams& proto, const OpenAiLimits& limits,
                                      uint64_t server_seed, SamplingParams& sampling) {
  if (prompt_token_ids.empty()) {
    return InvalidFieldError(prompt_field, "the prompt must have at least one token");
  }
  if (limits.vocab_size > 0) {
    for (size_t index = 0; index < prompt_token_ids.size(); ++index) {
      const int32_t id = prompt_token_ids[index];
      if (id < 0 || id >= limits.vocab_size) {
        return InvalidFieldError(
            absl::StrCat(std::string(prompt_field), "[", index, "]"),
            absl::StrCat("must be a token id in [0, ", limits.vocab_size, "), got ", id));
      }
    }
  }
  const int64_t context = limits.context_length_tokens;
  const int64_t max_prompt =
      limits.max_prompt_tokens > 0 ? std::min(limits.max_prompt_tokens, context - 1) : context - 1;
  const int64_t prompt_tokens = static_cast<int64_t>(prompt_token_ids.size());
  if (prompt_tokens > max_prompt) {
    return InvalidFieldError(
        prompt_field,
        absl::StrCat("the prompt is ", prompt_tokens, " tokens, more than the limit of ",
                     max_prompt, " (context length ", context, ")"));
  }
  if (!proto.has_max_tokens()) {
    sampling.max_tokens = context - prompt_tokens;
  } else if (prompt_tokens + proto.max_tokens() > context) {
    return InvalidFieldError(
        "sampling.max_tokens",
        absl::StrCat("the prompt (", prompt_tokens, " tokens) plus max_tokens (",
                     proto.max_tokens(), ") exceed the context length of ", context, " tokens"));
  } else {
    sampling.max_tokens = proto.max_tokens();
  }
  sampling.seed = proto.has_seed() ? proto.seed() : server_seed;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromProto(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    bool add_reflection_system_prompt, const OpenAiLimits& limits) {
  if (messages.empty()) return InvalidFieldError("messages", "must not be empty");
  if (messages.size() > limits.max_messages) {
    return InvalidFieldError("messages", absl::StrCat("at most ", limits.max_messages,
                                                      " messages, got ", messages.size()));
  }
  std::vector<ChatMessage> converted;
  converted.reserve(messages.size() + 1);
  bool has_system = false;
  for (int index = 0; index < messages.size(); ++index) {
    const v1::ChatMessage& message = messages[index];
    const std::string_view role = RoleName(message.role());
    if (role.empty()) {
      return InvalidFieldError(absl::StrCat("messages[", index, "].role"),
                               "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT");
    }
    has_system = has_system || message.role() == v1::ROLE_SYSTEM;
    converted.push_back(ChatMessage{std::string(role), message.content()});
  }
  if (add_reflection_system_prompt && !has_system) {
    converted.insert(converted.begin(),
                     ChatMessage{"system", std::string(kReflectionSystemPrompt)});
  }
  return converted;
}

std::vector<int32_t> TokenIdsFromProto(const v1::TokenIds& token_ids) {
  return std::vector<int32_t>(token_ids.ids().begin(), token_ids.ids().end());
}

v1::Section SectionToProto(Section section) {
  switch (section) {
    case Section::kThinking:
      return v1::SECTION_THINKING;
    case Section::kReflection:
      return v1::SECTION_REFLECTION;
    case Section::kOutput:
      return v1::SECTION_OUTPUT;
  }
  return v1::SECTION_OUTPUT;
}

v1::FinishReason FinishReasonToProto(GenerationStopReason reason) {
  switch (reason) {
    case GenerationStopReason::kEos:
      return v1::FINISH_REASON_EOS;
    case GenerationStopReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case GenerationStopReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case GenerationStopReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case GenerationStopReason::kContextLength:
      return v1::FINISH_REASON_CONTEXT_LENGTH;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void AppendPieceToChunk(const OutputPiece& piece, const Tokenizer& tokenizer,
                        v1::GenerationChunk& chunk) {
  chunk.set_section(SectionToProto(piece.section));
  chunk.mutable_text()->append(piece.text);
  for (const int32_t id : piece.token_ids) chunk.add_token_ids(id);
  for (const TokenLogprobs& logprobs : piece.logprobs) {
    v1::TokenLogprobs& entry = *chunk.add_logprobs();
    entry.set_token_id(logprobs.token_id);
    entry.set_logprob(logprobs.logprob);
    for (const TopTokenLogprob& alternative : logprobs.top) {
      v1::TopLogprob& top = *entry.add_top();
      top.set_token_id(alternative.token_id);
      top.set_logprob(alternative.logprob);
      if (absl::StatusOr<std::string> bytes = tokenizer.TokenBytes(alternative.token_id);
          bytes.ok()) {
        top.set_token_bytes(*std::move(bytes));
      }
    }
  }
}

void FinishToProto(const GenerationOutcome& outcome, v1::Finish& finish) {
  finish.set_reason(FinishReasonToProto(outcome.reason));
  finish.set_matched_stop(outcome.matched_stop);
  finish.set_matched_stop_token_id(outcome.matched_stop_token_id);
  finish.set_seed(outcome.seed);
  finish.set_thinking_budget_exhausted(outcome.thinking_budget_exhausted);
  v1::Usage& usage = *finish.mutable_usage();
  usage.set_prompt_tokens(static_cast<int32_t>(outcome.usage.prompt_tokens));
  usage.set_cached_prompt_tokens(static_cast<int32_t>(outcome.usage.cached_prompt_tokens));
  usage.set_completion_tokens(static_cast<int32_t>(outcome.usage.completion_tokens));
  usage.set_thinking_tokens(static_cast<int32_t>(outcome.usage.sections.thinking_tokens));
  usage.set_reflection_tokens(static_cast<int32_t>(outcome.usage.sections.reflection_tokens));
  usage.set_output_tokens(static_cast<int32_t>(outcome.usage.sections.output_tokens));
  usage.set_reflections(static_cast<int32_t>(outcome.usage.sections.reflections));
  v1::Timings& timings = *finish.mutable_timings();
  timings.set_queue_seconds(outcome.timings.queue_seconds);
  timings.set_time_to_first_token_seconds(outcome.timings.time_to_first_token_seconds);
  if (outcome.timings.time_to_first_output_token_seconds.has_value()) {
    timings.set_time_to_first_output_token_seconds(
        *outcome.timings.time_to_first_output_token_seconds);
  }
  timings.set_e2e_seconds(outcome.timings.e2e_seconds);
}

grpc::Status GrpcStatusFromAbsl(const absl::Status& status) {
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace reflect
