// The load tester's gRPC client: each PlannedRequest is one reflect.v1.Inference.Chat stream on
// gRPC's callback API (a ClientReadReactor per stream, no thread per stream).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "loadtest/in_flight_calls.h"
#include "loadtest/load_client.h"
#include "reflect/v1/inference.grpc.pb.h"

namespace reflect::loadtest {

// Spreads streams round-robin over `options.connections` channels, each forced onto its own
// HTTP/2 connection, so the server's per-connection stream cap does not queue them.
//
// Measurement (RequestRecord): tokens are counted from the chunks' token ids, with TokenClock's
// inter-token rule; a chunk's tokens are OUTPUT tokens when its section is SECTION_OUTPUT. Prompt
// and per-section counts come from Finish.usage. Outcomes: OK → kOk; RESOURCE_EXHAUSTED →
// kRejected, with retry_after from the trailing metadata "retry-after-ms"; DEADLINE_EXCEEDED →
// kTimeout (the client sets options.request_timeout as the call's deadline); anything else →
// kError with "CODE: message".
//
// Thread-safety and lifetime as LoadClient says; `done` runs on a gRPC callback thread.
class GrpcLoadClient final : public LoadClient {
 public:
  // Creates the channels (connecting lazily, on the first call). Fails with INVALID_ARGUMENT on
  // bad options.
  static absl::StatusOr<std::unique_ptr<GrpcLoadClient>> Create(LoadClientOptions options);

  GrpcLoadClient(const GrpcLoadClient&) = delete;
  GrpcLoadClient& operator=(const GrpcLoadClient&) = delete;
  ~GrpcLoadClient() override;

  void Send(const PlannedRequest& request, absl::Time run_start, RecordCallback done) override;
  void Drain() override;

 private:
  class ChatCall;

  explicit GrpcLoadClient(LoadClientOptions options);

  const LoadClientOptions options_;
  std::vector<std::unique_ptr<v1::Inference::Stub>> stubs_;
  std::atomic<uint64_t> next_stub_{0};

  InFlightCalls<ChatCall> in_flight_;
};

}  // namespace reflect::loadtest
