// RequestRouter: the router's core (DESIGN §1, §4, §8) — admission, replica choice and the
// per-request stream to a replica. Front ends (public gRPC, OpenAI HTTP) validate and tokenize,
// then hand a RoutedRequest and a ResponseSink to Submit; everything after that is here:
//
//   Submit ─▶ replica choice (ready replicas only; least outstanding work, ties and near-ties
//             broken by the longest prompt prefix the replica's prefix-cache summary holds;
//             none in rotation → UNAVAILABLE, answered at once)
//          ─▶ admission (bounded queue: requests and prompt + max_tokens tokens; full →
//             RESOURCE_EXHAUSTED with a retry hint, answered at once)
//          ─▶ reflect.internal.v1.Replica/Generate stream (callback API, no thread per stream)
//          ─▶ GenerationPipeline (detokenize, stop strings, sections, thinking budget)
//          ─▶ ResponseSink
//
// A request counts as queued from Submit until its first token arrives (or it ends), then as
// running; one still queued after AdmissionLimits.max_queue_time ends with RESOURCE_EXHAUSTED and
// a retry hint (one timer thread for all requests, not one per request). RoutedRequest.priority
// goes to the replica, whose scheduler admits and runs higher priorities first. A replica that
// answers RESOURCE_EXHAUSTED before the first token is skipped and the next best one tried; when
// none is left the request ends with RESOURCE_EXHAUSTED and a hint.
//
// Replica health: a background poller calls GetLoad on every replica every `poll_interval`; a
// replica whose poll fails, or that reports accepting = false, leaves rotation until a poll
// succeeds again. When a replica's stream breaks (UNAVAILABLE, connection lost, its process
// killed) that replica leaves rotation at once and the request ends with UNAVAILABLE naming it;
// other replicas' requests are untouched and the router stays up.
//
// Cancel (client disconnect, gRPC cancellation, deadline): cancels the replica stream, which
// frees the sequence within one replica step; the sink gets CANCELLED (or DEADLINE_EXCEEDED).
//
// Timings count from RoutedRequest.received_time; a request ended by a stop string has its
// replica stream cancelled before the replica's finish, so its cached_prompt_tokens is 0 and its
// queue time the router's part only. docs/routing.md has the rules in full.
//
// Ownership: the router owns its replica channels, poller thread and in-flight request states;
// each state holds its sink until OnFinished. Thread-safety: every method may be called from any
// thread. The destructor cancels what is in flight (sinks get UNAVAILABLE) and joins the poller.
// Cost: per token, one pipeline step and one sink call on a gRPC callback thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sampling_params.h"
#include "common/tokenizer.h"
#include "router/generation_output.h"

namespace reflect {

class RouterMetrics;

// A validated, tokenized request (the front ends build it).
struct RoutedRequest {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;  // at least one
  SamplingParams sampling;                // resolved: max_tokens and seed set; `stop` included
  TraceMode trace_mode = TraceMode::kFull;
  int64_t thinking_budget_tokens = 0;  // 0: none
  int32_t priority = 0;                // [-100, 100]
  absl::Time received_time;            // when the front end got it (timings count from here)
  absl::Time deadline = absl::InfiniteFuture();
};

struct AdmissionLimits {
  // Requests admitted but without a first token yet, over all replicas; beyond: rejected.
  int64_t max_queued_requests = 1024;
  // Tokens of those requests, each counting prompt + max_tokens (its prompt and the most output it
  // may ask for); beyond: rejected (a request bigger than this alone waits for an empty queue).
  int64_t max_queued_tokens = 1 << 22;
  // Requests in flight (queued plus running); beyond: rejected.
  int64_t max_in_flight_requests = 100'000;
  // Bounds of the retry hint, which is estimated from how fast the queue has been draining.
  absl::Duration min_retry_after = absl::Milliseconds(500);
  absl::Duration max_retry_after = absl::Seconds(60);
  // Queue-time deadline: a request admitted but still without a first token this long after its
  // admission ends with RESOURCE_EXHAUSTED ("waited … in the queue without being scheduled") and a
  // retry hint, and its replica stream is cancelled so the replica drops it. The wait includes the
  // prefill of its own prompt. InfiniteDuration: no deadline.
  absl::Duration max_queue_time = absl::Seconds(60);
};

struct RequestRouterOptions {
  std::vector<std::string> replica_addresses;  // "host:port", at least one
  AdmissionLimits admission;
  absl::Duration poll_interval = absl::Milliseconds(200);
  absl::Duration poll_timeout = absl::Seconds(1);
  // The served model name replicas must report in GetLoad (a replica serving another model is
  // never routed to, and says so in the log); empty: not checked.
  std::string model;
  // Tokens per block and probes of the prefix summaries are read from the replicas' reports.
};

// What the router knows about one replica (for /readyz, ListModels, logs and tests).
struct ReplicaStatus {
  std::string address;
  std::string replica_id;  // from its last report
  bool in_rotation = false;
  int64_t outstanding_requests = 0;  // this router's requests on it
  int64_t reported_running = 0;
  int64_t reported_waiting = 0;
  double kv_cache_usage_ratio = 0.0;
};

// Queue and in-flight counts of this router (for metrics and tests).
struct RouterLoad {
  int64_t queued_requests = 0;
  int64_t queued_prompt_tokens = 0;
  int64_t running_requests = 0;
};

// Cancels its request when Cancel is called (idempotent; harmless after the end, even after the
// router is gone). Dropping the handle does not cancel; the handle does not keep the request
// alive.
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  virtual void Cancel() = 0;
};

class RequestRouter {
 public:
  // Connects to the replicas (without waiting for them to be ready) and starts the poller.
  // INVALID_ARGUMENT for no or malformed addresses. `tokenizer` and `metrics` (may be null) must
  // outlive the router.
  static absl::StatusOr<std::unique_ptr<RequestRouter>> Create(RequestRouterOptions options,
                                                               const Tokenizer& tokenizer,
                                                               RouterMetrics* metrics);
  virtual ~RequestRouter() = default;

  // Admits and starts `request`. Answers at once: RESOURCE_EXHAUSTED with RetryAfter (router
  // queue full) or UNAVAILABLE (no replica in rotation) without calling the sink; otherwise the
  // sink gets the output and exactly one OnFinished, possibly before Submit returns.
  virtual absl::StatusOr<std::unique_ptr<RequestHandle>> Submit(
      RoutedRequest request, std::shared_ptr<ResponseSink> sink) = 0;

  // True when at least one replica is in rotation.
  virtual bool ready() const = 0;
  virtual std::vector<ReplicaStatus> Replicas() const = 0;
  virtual RouterLoad Load() const = 0;
  // Blocks until a replica is in rotation or `timeout` passes; returns ready().
  virtual bool WaitUntilReady(absl::Duration timeout) = 0;
};

}  // namespace reflect
