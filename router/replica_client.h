// One replica as the router talks to it (DESIGN §1, proto/reflect/internal/v1/replica.proto): a
// gRPC channel to the replica leader, a Generate stream per request on the callback API, and the
// GetLoad poll. Protobuf stays inside replica_client.cc: callers see plain structs (the tokens and
// finish of a stream, a load report) and absl::Status.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/prefix_summary.h"
#include "router/generation_output.h"
#include "router/generation_pipeline.h"
#include "router/request_router.h"

namespace reflect {

// The replica's Finish message.
struct ReplicaFinish {
  GenerationStopReason reason = GenerationStopReason::kLength;  // never kStopString
  int64_t cached_prompt_tokens = 0;
  double queue_seconds = 0.0;  // the leader's receipt to its first scheduled step
  int32_t preemptions = 0;
};

// One message of a Generate stream: tokens from `first_index` on (first_index below the tokens
// seen so far means a ForceTokens rewind), and the finish on the last message.
struct ReplicaMessage {
  int64_t first_index = 0;
  std::vector<ReplicaToken> tokens;
  std::optional<ReplicaFinish> finish;
};

// Receives one Generate stream's events: OnMessage any number of times, then OnClosed exactly
// once. Never concurrently; on gRPC callback threads, so neither may block. The stream keeps its
// observer alive until OnClosed returns.
class ReplicaStreamObserver {
 public:
  virtual ~ReplicaStreamObserver() = default;
  virtual void OnMessage(ReplicaMessage message) = 0;
  // The stream's gRPC status as an absl::Status (same code and message); a RESOURCE_EXHAUSTED
  // with the replica's "retry-after-ms" trailing metadata carries it as RetryAfter.
  virtual void OnClosed(const absl::Status& status) = 0;
};

// The router's side of one Generate stream. Opened in two steps, so the caller can keep the
// handle before any event arrives: ReplicaClient::OpenStream, then Start once. Thread-safety:
// ForceTokens and Cancel may be called from any thread, including from inside the observer, before
// Start (Cancel then takes effect as Start begins) and after the stream closed (no effect).
class ReplicaStream {
 public:
  virtual ~ReplicaStream() = default;
  // Sends StartGeneration for `request` (timeout and gRPC deadline from request.deadline). Events
  // go to the observer; it may get OnClosed before this returns.
  virtual void Start(const RoutedRequest& request) = 0;
  // Sends ForceTokens (queued behind a write in flight, never blocking).
  virtual void ForceTokens(const ForcedTokens& forced) = 0;
  // Cancels the RPC; the replica frees the sequence within one step, OnClosed follows.
  virtual void Cancel() = 0;
};

// A replica's LoadReport.
struct ReplicaLoadReport {
  std::string replica_id;
  std::string model;
  bool accepting = false;
  int64_t running_requests = 0;
  int64_t waiting_requests = 0;
  int64_t waiting_prompt_tokens = 0;
  double kv_cache_usage_ratio = 0.0;
  int64_t kv_cache_free_blocks = 0;
  int64_t kv_cache_total_blocks = 0;
  // Null when the replica publishes none or one the router cannot use (unknown hash function).
  std::shared_ptr<const PrefixSummary> prefix_summary;
};

// Ownership: owns the channel and stub. The destructor waits until every stream and poll it
// started is over and destroyed (so the caller cancels streams first): gRPC must not drop the
// channel's last reference on one of its own callback threads (see CallCount in the .cc).
// Thread-safety: every method may be called from any thread. Cost: a stream is one HTTP/2 stream
// on the shared channel and no thread; a poll is one unary call.
class ReplicaClient {
 public:
  // Does not connect yet (gRPC connects on first use and reconnects after failures, backing off
  // at most about a second so a restarted replica is back in rotation quickly).
  explicit ReplicaClient(std::string address);
  ~ReplicaClient();
  ReplicaClient(const ReplicaClient&) = delete;
  ReplicaClient& operator=(const ReplicaClient&) = delete;

  const std::string& address() const { return address_; }

  // A Generate stream reporting to `observer`, not started yet (ReplicaStream::Start). The
  // stream keeps the observer until OnClosed returns; one never started never calls it.
  std::shared_ptr<ReplicaStream> OpenStream(std::shared_ptr<ReplicaStreamObserver> observer);

  // Calls GetLoad with `timeout`; `done` runs once, on a gRPC thread (it must not block).
  void GetLoad(absl::Duration timeout, std::function<void(absl::StatusOr<ReplicaLoadReport>)> done);

 private:
  struct Connection;
  std::string address_;
  std::unique_ptr<Connection> connection_;
};

// True for "host:port" with a non-empty host and a port in [1, 65535] ("[::1]:port" included).
bool IsReplicaAddress(const std::string& address);

}  // namespace reflect
