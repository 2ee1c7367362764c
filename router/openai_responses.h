// OpenAI-compatible response bodies: plain result values in, compact JSON out. Non-streaming
// `chat.completion` / `text_completion` objects, SSE chunks (`chat.completion.chunk`,
// `text_completion`), the usage chunk, and the /v1/models list. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "router/openai_protocol.h"
#include "router/section_parser.h"

namespace reflect {

// OpenAI's finish reasons: kStop for an end-of-sequence token, a stop token or a stop string;
// kLength for max_tokens or the context length.
enum class FinishReason { kStop, kLength };

struct TopLogprob {
  std::string token;  // the token's text (its raw bytes are in the JSON's "bytes")
  double logprob = 0;
};

// One generated token's log-probability and its best alternatives.
struct TokenLogprob {
  std::string token;
  double logprob = 0;
  std::vector<TopLogprob> top;  // best first
};

struct CompletionUsage {
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prefix-cache hits
  int64_t completion_tokens = 0;
  SectionCounts sections;  // thinking + reflection + output tokens = completion_tokens
};

// What every object of one response shares.
struct CompletionIdentity {
  CompletionEndpoint endpoint = CompletionEndpoint::kChatCompletions;
  std::string id;  // CompletionId(…)
  int64_t created_unix_seconds = 0;
  std::string model;
};

// A whole choice (non-streaming) or one piece of it (a streamed chunk).
struct ChoiceResult {
  int32_t index = 0;
  std::string content;    // chat `content`; completions `text`
  std::string reasoning;  // chat `reasoning_content` (thinking and reflection, kFull trace mode)
  std::vector<TokenLogprob> logprobs;
  bool logprobs_requested = false;  // false: "logprobs": null
  // Completions only: offset in the choice's text of this piece's first token (the
  // "text_offset" of each token follows from the token texts).
  int64_t text_offset = 0;
  std::optional<FinishReason> finish_reason;  // unset: null (streaming, not finished)
};

// "chatcmpl-<request id>" or "cmpl-<request id>".
std::string CompletionId(CompletionEndpoint endpoint, std::string_view request_id);

// Seconds since the Unix epoch, for `created`.
int64_t UnixSeconds();

// The non-streaming response: `chat.completion` or `text_completion`, with usage.
std::string CompletionResponseJson(const CompletionIdentity& identity,
                                   const std::vector<ChoiceResult>& choices,
                                   const CompletionUsage& usage);

// One streamed chunk for one choice. Chat: `delta` holds `role` when `first_chunk` (OpenAI's first
// chunk is {"role": "assistant", "content": ""}), `content` and `reasoning_content` when not
// empty. With `include_usage` every chunk carries "usage": null, as OpenAI's do, or the usage so
// far when `running_usage` is set (vLLM's continuous_usage_stats).
std::string CompletionChunkJson(const CompletionIdentity& identity, const ChoiceResult& piece,
                                bool first_chunk, bool include_usage,
                                const CompletionUsage* running_usage = nullptr);

// The last chunk when stream_options.include_usage: empty `choices`, the request's usage.
std::string UsageChunkJson(const CompletionIdentity& identity, const CompletionUsage& usage);

struct ServedModel {
  std::string name;
  int64_t created_unix_seconds = 0;
  int64_t context_length_tokens = 0;
};

// GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "created", "owned_by",
// "max_model_len"}]}.
std::string ModelListJson(const std::vector<ServedModel>& models);

}  // namespace reflect
