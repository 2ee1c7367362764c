// Plain data shared by the load tester's parts (issue #6): the workload generator plans requests,
// the clients send them and measure, the report summarizes the measurements. Times are
// absl::Duration offsets from the run's start unless a comment says otherwise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reflect::loadtest {

// One request the generator planned: when to send it and what to ask.
struct PlannedRequest {
  int64_t index = 0;                              // 0, 1, 2… in send order
  absl::Duration send_at = absl::ZeroDuration();  // open loop; ignored by a closed loop
  bool add_reflection_system_prompt = true;       // the shared reflection system prompt
  std::string user_message;                       // about `prompt_tokens` tokens of text
  int32_t prompt_tokens = 0;                      // the length the generator aimed for
  int32_t max_tokens = 0;                         // output length asked for (with ignore_eos)
  bool ignore_eos = true;
  double temperature = 0.0;
  uint64_t seed = 0;
  int32_t priority = 0;  // higher first (gRPC field; the HTTP "priority" extension)
};

// How a request ended, from the client's side.
enum class RequestOutcome {
  kOk,        // the stream finished normally
  kRejected,  // refused at admission: HTTP 429 / gRPC RESOURCE_EXHAUSTED
  kError,     // any other error status, or a broken stream
  kTimeout,   // the client's own deadline passed first
};

// What one request measured. Durations are from `sent` (the moment the client started the call)
// unless named otherwise; nullopt when the event never happened.
struct RequestRecord {
  int64_t index = 0;
  absl::Duration sent = absl::ZeroDuration();  // offset of the call's start from the run's start
  RequestOutcome outcome = RequestOutcome::kError;
  std::string error;  // status code and message when not kOk
  std::optional<absl::Duration> time_to_first_token;
  std::optional<absl::Duration> time_to_first_output_token;  // first OUTPUT-section token
  std::vector<absl::Duration> inter_token_latencies;         // between consecutive token arrivals
  std::optional<absl::Duration> end_to_end;                  // until the last byte / status
  std::optional<absl::Duration> retry_after;                 // the hint a rejection carried
  int32_t prompt_tokens = 0;                                 // as the server reported (usage)
  int32_t output_tokens = 0;                                 // tokens received
  int32_t thinking_tokens = 0;                               // per section, from usage
  int32_t reflection_tokens = 0;
};

// One scrape of the router's /metrics during a run.
struct ServerSample {
  absl::Duration at = absl::ZeroDuration();
  double queued_requests = 0;       // reflect_num_requests_waiting
  double running_requests = 0;      // reflect_num_requests_running
  double kv_cache_usage_ratio = 0;  // mean over replicas that report it; 0 when none
};

}  // namespace reflect::loadtest
