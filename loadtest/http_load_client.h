// The load tester's HTTP client: each PlannedRequest is one streamed POST /v1/chat/completions
// (OpenAI API with server-sent events) on Boost.Beast, over its own TCP connection, all on one
// io_context run by options.threads threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "boost/asio/executor_work_guard.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "loadtest/in_flight_calls.h"
#include "loadtest/load_client.h"

namespace reflect::loadtest {

// The request body: the user message, "reflection": true for the shared reflection system prompt,
// max_tokens, ignore_eos, temperature, seed, priority when not 0, and "stream": true with
// "stream_options": {"include_usage": true}.
std::string ChatCompletionBody(const PlannedRequest& request, const std::string& model);

// Measurement (RequestRecord): an SSE chunk with non-empty `content` or `reasoning_content` is one
// token arrival (OUTPUT when `content`). The final usage chunk gives output_tokens
// (completion_tokens), prompt_tokens and the per-section counts, and the gaps are reconciled with
// it (TokenClock::ReconcileTokenCount): HTTP does not say how many tokens a chunk carried.
// Outcomes: 200 with a usage chunk → kOk; 429 → kRejected, retry_after from Retry-After (whole
// seconds); the client's deadline → kTimeout; any other status, an error event in the stream, a
// broken connection or a stream without usage → kError ("HTTP 503: message", "connect: …").
//
// Thread-safety and lifetime as LoadClient says; `done` runs on one of the client's threads.
class HttpLoadClient final : public LoadClient {
 public:
  // Resolves options.address ("host:port") once and starts the threads. Fails with
  // INVALID_ARGUMENT on bad options, UNAVAILABLE when the host does not resolve.
  static absl::StatusOr<std::unique_ptr<HttpLoadClient>> Create(LoadClientOptions options);

  HttpLoadClient(const HttpLoadClient&) = delete;
  HttpLoadClient& operator=(const HttpLoadClient&) = delete;
  ~HttpLoadClient() override;

  void Send(const PlannedRequest& request, absl::Time run_start, RecordCallback done) override;
  void Drain() override;

 private:
  class Exchange;

  HttpLoadClient(LoadClientOptions options, boost::asio::ip::tcp::endpoint endpoint);

  const LoadClientOptions options_;
  const boost::asio::ip::tcp::endpoint endpoint_;
  boost::asio::io_context io_context_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;

  InFlightCalls<Exchange> in_flight_;
};

}  // namespace reflect::loadtest
