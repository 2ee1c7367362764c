// What the router streams back for one request, as plain data (DESIGN §3, §7, §8): sectioned
// pieces of text with their token ids, then one outcome. Both front ends (public gRPC, OpenAI
// HTTP) turn these into their wire formats; the request router produces them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "router/section_parser.h"

namespace reflect {

// How much of a reflection trace the client receives (docs/api.md, ReflectionOptions):
// kFull: every section, tags removed; kOutputOnly: only OUTPUT text (pieces of other sections are
// not produced at all, their tokens still count); kVerbatim: the text exactly as the model wrote
// it, tags included (still labelled by section).
enum class TraceMode { kFull, kOutputOnly, kVerbatim };

// One alternative at a position.
struct TopTokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;  // natural log
};

// The log-probability of one generated token and its best alternatives (best first).
struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;  // natural log; 0 for tokens the router forced (thinking budget)
  std::vector<TopTokenLogprob> top;
};

// One streamed piece: text of one section and the tokens counted with it. A piece may have text
// but no token ids (a token whose text spans a section boundary gives one piece per section; its
// id goes with the last), or token ids but no text (text held back: a partial UTF-8 character, a
// possible tag or stop-string prefix; or a tag removed by the trace mode).
struct OutputPiece {
  Section section = Section::kOutput;
  std::string text;  // valid UTF-8, never ending inside a character
  std::vector<int32_t> token_ids;
  std::vector<TokenLogprobs> logprobs;  // one per token id when logprobs were asked for
};

// Why generation stopped (the public API's reasons).
enum class GenerationStopReason {
  kEos,            // an end-of-sequence token of the model
  kStopToken,      // a token of SamplingParams.stop_token_ids
  kStopString,     // a string of SamplingParams.stop appeared in the text
  kLength,         // max_tokens generated
  kContextLength,  // the model's context window is full
};

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
  int64_t completion_tokens = 0;     // forced thinking-budget tokens included
  SectionCounts sections;            // thinking + reflection + output = completion_tokens
};

// Seconds from the router's receipt of the request.
struct GenerationTimings {
  double queue_seconds = 0.0;  // until first scheduled on a replica (router + replica queue)
  double time_to_first_token_seconds = 0.0;
  std::optional<double> time_to_first_output_token_seconds;  // unset: no OUTPUT token
  double e2e_seconds = 0.0;
};

// How a request ended normally.
struct GenerationOutcome {
  GenerationStopReason reason = GenerationStopReason::kLength;
  std::string matched_stop;           // kStopString: the stop string
  int32_t matched_stop_token_id = 0;  // kStopToken: the token
  uint64_t seed = 0;                  // the seed the draws used
  bool thinking_budget_exhausted = false;
  GenerationUsage usage;
  GenerationTimings timings;
  std::string replica_id;  // which replica served it (for logs)
};

// Receives one request's output, in order: OnPieces any number of times, then OnFinished exactly
// once. Called on gRPC threads of the router, never concurrently for one request; must not block
// (write or post, and return). After OnFinished the router drops its reference.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Pieces that became final since the last call, in stream order (never empty).
  virtual void OnPieces(std::vector<OutputPiece> pieces) = 0;
  // The outcome, or why the request failed: RESOURCE_EXHAUSTED (with RetryAfter), UNAVAILABLE
  // (no replica, or the replica went away mid-stream), DEADLINE_EXCEEDED, CANCELLED,
  // INVALID_ARGUMENT (what a replica refused), INTERNAL.
  virtual void OnFinished(const absl::StatusOr<GenerationOutcome>& outcome) = 0;
};

}  // namespace reflect
