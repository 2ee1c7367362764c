// The load tester's clients (issue #6): send a PlannedRequest over one protocol, measure it into a
// RequestRecord. GrpcLoadClient (grpc_load_client.h) speaks reflect.v1.Inference.Chat,
// HttpLoadClient (http_load_client.h) the OpenAI chat completions API with SSE streaming.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loadtest/load_types.h"

namespace reflect::loadtest {

// Where and how a client talks to the router.
struct LoadClientOptions {
  std::string address;  // "host:port" of the router's gRPC or HTTP port
  std::string api_key;  // sent as "authorization: Bearer <key>" when not empty
  std::string model;    // empty: the server's default model
  // The client's own deadline per request, from the call's start: a request still unanswered
  // then is cancelled and recorded as kTimeout.
  absl::Duration request_timeout = absl::Minutes(10);
  // gRPC: channels (each its own HTTP/2 connection) the streams are spread over, since a server
  // may cap concurrent streams per connection (often at 100). HTTP: unused (one TCP connection per
  // request).
  int connections = 8;
  // Threads that run the network I/O and the measurements (HTTP: the io_context's; gRPC runs its
  // callbacks on its own small internal pool).
  int threads = 2;
};

// Called exactly once per Send with the finished record, from one of the client's threads. It must
// not block for long (it holds up other streams' measurements) and must not destroy the client.
using RecordCallback = std::function<void(RequestRecord)>;

// A client that keeps any number of requests in flight on a fixed, small number of threads.
// Thread-safety: Send and Drain may be called from any thread concurrently. Destroying the client
// cancels what is still in flight (each gets its `done`, outcome kError "cancelled") and waits
// for every `done` to return.
class LoadClient {
 public:
  virtual ~LoadClient() = default;

  // Starts `request` now (the record's `sent` is now − run_start) and returns at once.
  virtual void Send(const PlannedRequest& request, absl::Time run_start, RecordCallback done) = 0;

  // Blocks until every request sent so far has called its `done`.
  virtual void Drain() = 0;
};

// Measures one stream's timing as tokens arrive; not thread-safe (one stream's events come in
// order from one reaction at a time).
//
// The inter-token rule: a chunk that brings k >= 1 tokens is one arrival. Its gap from the
// previous arrival is recorded once, followed by k - 1 zero gaps (the tokens came together), so a
// stream of n tokens records n - 1 gaps. Time to first token is the first arrival's; time to
// first output token the first arrival with an OUTPUT-section token.
class TokenClock {
 public:
  explicit TokenClock(absl::Time sent) : sent_(sent) {}

  absl::Time sent() const { return sent_; }
  int32_t tokens() const { return tokens_; }

  // Records `count` tokens arriving at `now`; `output` when any of them is an OUTPUT token.
  void OnTokens(absl::Time now, int32_t count, bool output);

  // Makes the gaps agree with `total` tokens when the protocol reveals the count only at the end
  // (HTTP: one SSE chunk may carry several tokens): missing tokens add zero gaps, and surplus
  // arrivals (one token's text split over chunks) drop the last gaps. Sets tokens() to `total`.
  void ReconcileTokenCount(int32_t total);

  // Copies the timings into `record` and sets its end_to_end to `end` − sent.
  void Fill(absl::Time end, RequestRecord& record) const;

 private:
  absl::Time sent_;
  std::optional<absl::Time> last_arrival_;
  std::optional<absl::Duration> time_to_first_token_;
  std::optional<absl::Duration> time_to_first_output_token_;
  std::vector<absl::Duration> gaps_;
  int32_t tokens_ = 0;
};

}  // namespace reflect::loadtest
