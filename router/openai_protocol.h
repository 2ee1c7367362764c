// OpenAI-compatible completion requests: the JSON bodies of POST /v1/chat/completions and
// POST /v1/completions, parsed and validated into a plain CompletionRequest (DESIGN §3, §8).
// docs/http-api.md lists every field and rule; this header is the contract.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/chat_template.h"
#include "common/sampling_params.h"
#include "router/generation_output.h"

namespace reflect {

enum class CompletionEndpoint {
  kChatCompletions,  // POST /v1/chat/completions
  kCompletions,      // POST /v1/completions
};

// One prompt of /v1/completions: text (tokenized as-is) or token ids.
using CompletionPrompt = std::variant<std::string, std::vector<int32_t>>;

// A validated request. Every value is within the limits it was parsed with.
struct CompletionRequest {
  CompletionEndpoint endpoint = CompletionEndpoint::kChatCompletions;
  std::string model;  // a served model name: the one asked for, or the default

  // Chat: the conversation, never empty. With "reflection": true and no system message, the
  // reflection system prompt (kReflectionSystemPrompt) has been put first.
  std::vector<ChatMessage> messages;
  bool reflection = false;  // the request asked for the reflection system prompt

  // Completions: one or more prompts (several: a batch; choice i·n + j is prompt i's j-th).
  std::vector<CompletionPrompt> prompts;

  // Everything but `seed` and `max_tokens` is final here; ResolveSampling fills those two once
  // the prompt's length is known. `logprobs` is the number of alternatives per token.
  SamplingParams sampling;
  std::optional<int64_t> max_tokens;  // unset: up to the context length
  std::optional<uint64_t> seed;       // unset: the server picks one (and reports it)

  int32_t n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  // stream_options.continuous_usage_stats (vLLM's): with include_usage, every chunk carries the
  // usage so far instead of null.
  bool continuous_usage = false;
  // Unset: no log-probabilities. Set: the sampled token's log-probability plus this many
  // alternatives per token (chat: logprobs=true with top_logprobs; completions: logprobs=k).
  std::optional<int32_t> logprobs;

  TraceMode trace_mode = TraceMode::kFull;  // default: chat kFull, completions kVerbatim
  int64_t thinking_budget_tokens = 0;       // 0: no budget
  int32_t priority = 0;                     // [-100, 100]; higher first
};

// What ParseCompletionRequest enforces; the router fills it from its flags and the model config.
struct OpenAiLimits {
  // The names the model is served under; the first is the default for requests without "model".
  std::vector<std::string> served_model_names;
  int64_t context_length_tokens = 8192;  // the model's max_position_embeddings
  int32_t vocab_size = 0;                // > 0: token ids must be below it; 0: not checked here
  int64_t max_prompt_tokens = 0;         // 0: context_length_tokens - 1
  int32_t max_n = 16;
  int32_t max_batch_prompts = 64;  // prompts in one /v1/completions request
  int32_t max_messages = 1024;
  int32_t max_stop_strings = 64;
  int32_t max_stop_string_bytes = 256;
  int32_t max_stop_token_ids = 64;
  int32_t max_logprobs = 20;
  double max_temperature = 2.0;
  // Used when the request leaves them out: the reflection models' recommended values.
  double default_temperature = 0.7;
  double default_top_p = 0.95;
};

// Parses `body` for `endpoint`. Errors: INVALID_ARGUMENT whose message starts with the offending
// field's JSON path ("temperature: must be …", "messages[1].role: …", "body: invalid JSON …") and
// whose payload names it (ErrorField); NOT_FOUND for a model that is not served.
//
// Strict about names: a field this server does not know is refused ("<name>: unknown field"), so
// a misspelled "max_token" or an unsupported feature is never silently ignored. OpenAI fields that
// do not change the result are accepted and ignored (IgnoredRequestFields); fields of features we
// lack (tools, logit_bias, echo, suffix, images, …) are accepted only at their neutral value.
absl::StatusOr<CompletionRequest> ParseCompletionRequest(CompletionEndpoint endpoint,
                                                         std::string_view body,
                                                         const OpenAiLimits& limits);

// After the caller has tokenized one prompt (`prompt_tokens` ids, chat template included): checks
// its length against the limits and returns the sampling parameters with `max_tokens` (unset:
// what is left of the context) and `seed` (unset: `server_seed`) resolved. INVALID_ARGUMENT
// naming "messages"/"prompt" for a prompt too long, "max_tokens" when prompt plus max_tokens
// exceeds the context.
absl::StatusOr<SamplingParams> ResolveSampling(const CompletionRequest& request,
                                               int64_t prompt_tokens, const OpenAiLimits& limits,
                                               uint64_t server_seed);

// OpenAI fields accepted and ignored because they do not change the completion.
std::span<const std::string_view> IgnoredRequestFields();

}  // namespace reflect
