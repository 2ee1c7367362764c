// reflect.v1 (proto/reflect/v1/inference.proto) ↔ the router's plain values (DESIGN §3: convert
// protobuf at the edges). Validation of the public API's requests lives here too, with the bounds
// of OpenAiLimits so that gRPC and HTTP accept the same values; every error is INVALID_ARGUMENT
// (NOT_FOUND for a model) whose message starts with the offending field's proto path
// ("sampling.temperature: …", "messages[1].role: …") and whose payload names it (ErrorField).
//
// Pure functions; thread-safe. Cost: linear in the request.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/chat_template.h"
#include "common/sampling_params.h"
#include "common/tokenizer.h"
#include "grpcpp/support/status.h"
#include "reflect/v1/inference.pb.h"
#include "router/generation_output.h"
#include "router/openai_protocol.h"

namespace reflect {

// The served model `requested` names (empty: the default, the first served name); NOT_FOUND
// "model" otherwise.
absl::StatusOr<std::string> ResolveModelName(std::string_view requested,
                                             const OpenAiLimits& limits);

// `request_id` when it is valid (at most 128 printable ASCII characters), a new random id when
// empty, INVALID_ARGUMENT "request_id" otherwise.
absl::StatusOr<std::string> ResolveRequestId(std::string_view request_id);

// A new random request id (16 hex digits); also used by the HTTP front end.
std::string NewRequestId();

// A random seed for a request that did not choose one.
uint64_t NewSeed();

// INVALID_ARGUMENT "priority" outside [-100, 100].
absl::Status ValidatePriority(int32_t priority);

// The trace mode and thinking budget of `reflection` (unset: full trace, no budget).
struct ReflectionSettings {
  TraceMode trace_mode = TraceMode::kFull;
  int64_t thinking_budget_tokens = 0;
};
absl::StatusOr<ReflectionSettings> ReflectionFromProto(const v1::ReflectionOptions& reflection,
                                                       const OpenAiLimits& limits);

// Checks every field of `sampling` that does not depend on the prompt and applies the defaults of
// the proto's comments (temperature 0.7, top_p 0.95 from `limits`, repetition penalty 1). The
// returned params still need ResolvePromptAndSampling for max_tokens and seed.
absl::StatusOr<SamplingParams> SamplingFromProto(const v1::SamplingParams& sampling,
                                                 const OpenAiLimits& limits);

// Checks the prompt (`prompt_field` names it in errors: "text", "token_ids", "messages"): at least
// one token, ids inside the vocabulary, no longer than the limit; then resolves
// `sampling.max_tokens` (unset in `proto`: what is left of the context; set: prompt plus it must
// fit, else "sampling.max_tokens") and `sampling.seed` (unset: `server_seed`).
absl::Status ResolvePromptAndSampling(std::string_view prompt_field,
                                      const std::vector<int32_t>& prompt_token_ids,
                                      const v1::SamplingParams& proto, const OpenAiLimits& limits,
                                      uint64_t server_seed, SamplingParams& sampling);

// The conversation of a ChatRequest or TokenizeRequest: at least one message, at most
// limits.max_messages, no ROLE_UNSPECIFIED; with `add_reflection_system_prompt` and no system
// message, kReflectionSystemPrompt first.
absl::StatusOr<std::vector<ChatMessage>> ChatMessagesFromProto(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
    bool add_reflection_system_prompt, const OpenAiLimits& limits);

// Token ids of a GenerateRequest's `token_ids` prompt.
std::vector<int32_t> TokenIdsFromProto(const v1::TokenIds& token_ids);

v1::Section SectionToProto(Section section);
v1::FinishReason FinishReasonToProto(GenerationStopReason reason);

// Appends `piece`'s ids, text and logprobs to `chunk` (same section; sets it). Top alternatives
// carry their raw bytes from `tokenizer`.
void AppendPieceToChunk(const OutputPiece& piece, const Tokenizer& tokenizer,
                        v1::GenerationChunk& chunk);

// The Finish message of a successful outcome.
void FinishToProto(const GenerationOutcome& outcome, v1::Finish& finish);

// The same code and message as a gRPC status.
grpc::Status GrpcStatusFromAbsl(const absl::Status& status);

}  // namespace reflect
