// An asynchronous HTTP/1.1 server (Boost.Beast over Asio) for the router's OpenAI-compatible API:
// a fixed pool of I/O threads, keep-alive, size limits and timeouts, optional TLS, API keys, and
// server-sent event streams that handlers write from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "router/api_keys.h"
#include "router/http_message.h"

namespace reflect {

namespace http_internal {
class ConnectionBase;
struct ServerState;
enum class ActionKind : int;
}  // namespace http_internal

// The response side of one HTTP exchange, handed to the route's handler.
//
// A handler answers with either one Send (or SendError), or StartEventStream, any number of
// SendEvent, then FinishEventStream. Calls return at once: the bytes are queued onto the
// connection's strand and written in order, each event flushed as soon as it is queued.
//
// Every call reports what happened to the exchange: OK (queued), FAILED_PRECONDITION (a call out
// of the order above), or CANCELLED once the client has gone (closed the connection, a write failed
// or timed out, it stopped reading while too much was buffered, or the server stopped). A streaming
// caller stops producing on CANCELLED, or earlier through OnCancel.
//
// Ownership: the handler keeps the writer (a shared_ptr) for as long as it answers; the writer
// keeps its connection object alive (not the socket open). Dropping the writer without an answer
// sends 500; dropping it mid-stream closes the connection (the client sees no "[DONE]").
// Thread-safety: every method may be called from any thread, concurrently.
class HttpResponseWriter {
 public:
  HttpResponseWriter(std::shared_ptr<http_internal::ConnectionBase> connection, uint64_t exchange);
  ~HttpResponseWriter();
  HttpResponseWriter(const HttpResponseWriter&) = delete;
  HttpResponseWriter& operator=(const HttpResponseWriter&) = delete;

  // One full response.
  absl::Status Send(HttpResponse response);
  // ErrorResponse(error): the OpenAI error body, the mapped status, Retry-After when hinted.
  absl::Status SendError(const absl::Status& error);

  // Starts a `text/event-stream` response (200; chunked on HTTP/1.1, close-delimited on 1.0).
  absl::Status StartEventStream();
  // Writes the event "data: <data>\n\n". `data` must hold no newline (compact JSON has none).
  absl::Status SendEvent(std::string_view data);
  // Writes "data: [DONE]\n\n" and ends the response; the connection then serves the next request.
  absl::Status FinishEventStream();

  // `callback` runs once if the client goes away before the response has been written out: on an
  // I/O thread (it must not block), or at once on this thread when that has already happened.
  // It replaces an earlier callback. Never called after the response completed.
  void OnCancel(std::function<void()> callback);

  // True once the client has gone (see above).
  bool cancelled() const;

 private:
  enum class Phase { kIdle, kStreaming, kComplete };
  friend class http_internal::ConnectionBase;

  // Called by the connection, on its strand, when the client has gone mid-exchange.
  void NotifyCancelled();
  // Checks `phase_ == from`, moves to `to` and posts the action to the connection.
  absl::Status Advance(Phase from, Phase to, http_internal::ActionKind kind, std::string bytes,
                       HttpResponse response);

  const std::shared_ptr<http_internal::ConnectionBase> connection_;
  const uint64_t exchange_;
  mutable std::mutex mutex_;
  Phase phase_ = Phase::kIdle;
  bool cancelled_ = false;
  std::function<void()> cancel_callback_;
};

// A route's handler. Runs on an I/O thread: it must not block (hand long work to another thread
// and answer through the writer from there).
using HttpHandler =
    std::function<void(HttpRequest request, std::shared_ptr<HttpResponseWriter> writer)>;

// Whether a route needs an API key (when keys are configured).
enum class RouteAccess {
  kAuthenticated,  // the API: 401 without a valid "Authorization: Bearer <key>"
  kPublic,         // probes and metrics (/healthz, /readyz, /metrics): never asks for a key
};

struct TlsFiles {
  std::string certificate_chain_file;  // PEM: the server certificate, then intermediates
  std::string private_key_file;        // PEM
};

struct HttpServerOptions {
  std::string address = "0.0.0.0";
  uint16_t port = 8000;                 // 0: an ephemeral port (see HttpServer::port())
  int io_threads = 0;                   // 0: one per hardware thread
  int64_t max_body_bytes = 8 << 20;     // larger bodies: 413
  int64_t max_header_bytes = 16 << 10;  // request line plus headers; larger: 431
  // Time for a whole request (headers and body) once its first byte has arrived, and for a TLS
  // handshake; a slower client is disconnected.
  std::chrono::milliseconds request_timeout{30'000};
  // How long an idle keep-alive connection waits for its next request.
  std::chrono::milliseconds keep_alive_timeout{60'000};
  // How long one write may wait on a client that does not read; then the connection is closed.
  std::chrono::milliseconds write_timeout{30'000};
  // Response bytes queued but not yet written, per connection; beyond it the client is too slow
  // and is disconnected (the handler sees CANCELLED).
  int64_t max_queued_response_bytes = 8 << 20;
  std::optional<TlsFiles> tls;  // set: HTTPS only, on the same port
  ApiKeys api_keys;             // empty: no authentication
};

// The server: one io_context run by `io_threads` threads; every connection is a few asynchronous
// operations on its own strand, so thousands of open streams cost memory (a few KiB each when
// idle), not threads.
//
// Life cycle: construct → AddRoute… → Start → Stop (or destruction). Requests that match no path
// get 404, a path without the method 405 (with Allow), each with an OpenAI error body.
// Thread-safety: AddRoute only before Start; Start, Stop and the destructor from one thread, never
// an I/O thread (a handler); port() and open_connections() from any thread.
class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // Stop(0)
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves `method` requests for exactly `path` (no query string, no patterns).
  void AddRoute(std::string_view method, std::string_view path, HttpHandler handler,
                RouteAccess access = RouteAccess::kAuthenticated);

  // Loads the TLS files, binds, listens and starts the I/O threads.
  absl::Status Start();

  // The bound port (after Start).
  uint16_t port() const;

  // Graceful stop: stops accepting, closes idle connections, lets requests in flight finish for up
  // to `drain_timeout` (their responses say "Connection: close"), then closes the rest (their
  // handlers' writers report CANCELLED) and joins the I/O threads. Idempotent.
  void Stop(std::chrono::milliseconds drain_timeout);

  // Client connections currently open.
  int64_t open_connections() const;

 private:
  std::shared_ptr<http_internal::ServerState> state_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace reflect
