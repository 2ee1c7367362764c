// What the engine loop tells the owner of a request (DESIGN §3, §8): each generated token, then
// exactly one final outcome. Plain data plus a callback interface that the gRPC layer (or a
// test) implements.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/step_plan.h"

namespace reflect {

// One generated token.
struct GeneratedToken {
  int64_t index = 0;  // among the request's generated tokens (failover prefix included)
  int32_t token_id = 0;
  float logprob = 0.0f;  // natural log, under the processed distribution (see SampledToken)
  // The SamplingParams.logprobs most likely tokens under that same distribution, most likely
  // first (see SampledToken); empty when logprobs = 0. A forced token (EngineLoop::Force) was
  // not sampled: logprob 0 and no alternatives.
  std::vector<TokenAlternative> top_logprobs = {};
};

// Why a request stopped normally (the replica's reasons; stop strings are the router's).
enum class StopReason {
  kEos,            // one of the model's end-of-sequence ids
  kStopToken,      // one of SamplingParams.stop_token_ids
  kLength,         // max_tokens generated
  kContextLength,  // prompt + generated reached the maximum model length
};

std::string_view StopReasonName(StopReason reason);

// Facts about a finished request, valid with an OK status.
struct GenerationSummary {
  StopReason reason = StopReason::kLength;
  int64_t cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
  double queue_seconds = 0.0;        // from Submit to the first scheduled step
  int32_t preemptions = 0;           // times preempted (recompute or swap) while running
};

// Receives one request's events on the engine thread, in order: OnToken for each token, then
// OnFinished once, after which the engine drops its reference. Implementations must not block
// (they enqueue or post, and return); they may call EngineLoop::Cancel.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnToken(const GeneratedToken& token) = 0;
  // OK with `summary`, or why the request ended early: CANCELLED, DEADLINE_EXCEEDED,
  // RESOURCE_EXHAUSTED (queue full, outgrew the KV cache), INVALID_ARGUMENT, UNAVAILABLE (the
  // engine stopped), INTERNAL (a failed step).
  virtual void OnFinished(const absl::Status& status, const GenerationSummary& summary) = 0;
};

}  // namespace reflect
