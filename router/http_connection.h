// Internal to HttpServer (router/http_server.cc, router/http_connection.cc): what the server and
// its connections share. Not for other users: include router/http_server.h.
#pragma once

// clang-format off
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it
// clang-format on

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "router/http_server.h"

namespace reflect {
namespace http_internal {

enum class ActionKind : int { kFullResponse, kStartStream, kEvent, kFinishStream, kAbandon };

// What a writer asks its connection to do, applied on the connection's strand.
struct Action {
  ActionKind kind;
  std::string bytes;      // kEvent, kFinishStream: the event ("data: …\n\n")
  HttpResponse response;  // kFullResponse
};

struct Route {
  std::string method;
  HttpHandler handler;
  RouteAccess access;
};

// Everything the connections share. Connections hold it by shared_ptr, so the io_context (which
// their sockets and timers need) outlives every connection, even one a handler keeps after Stop.
struct ServerState {
  explicit ServerState(HttpServerOptions server_options) : options(std::move(server_options)) {}

  const HttpServerOptions options;
  boost::asio::io_context io_context;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      work_guard;
  std::optional<boost::asio::ssl::context> tls_context;
  std::optional<boost::asio::ip::tcp::acceptor> acceptor;
  std::map<std::string, std::vector<Route>, std::less<>> routes;  // by path; fixed after Start

  std::mutex mutex;  // guards the fields below
  std::condition_variable connection_closed;
  std::list<std::weak_ptr<ConnectionBase>> connections;  // the open ones, for Stop
  std::atomic<int64_t> open_connections{0};
  bool draining = false;

  // Once Stop has joined the I/O threads nothing may be posted: no thread would run it, and a
  // queued handler holding a connection would keep this state (and itself) alive forever.
  std::shared_mutex post_mutex;
  bool posts_closed = false;
};

// The type-independent face of a connection (plain TCP or TLS).
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  // Queues `action` for exchange `exchange` on the strand; false once the server has stopped.
  virtual bool Post(uint64_t exchange, Action action) = 0;
  // Stop accepting requests on this connection: close it when idle, else after this response.
  virtual void BeginDrain() = 0;
  virtual void ForceClose() = 0;

 protected:
  static void NotifyCancelled(HttpResponseWriter& writer) { writer.NotifyCancelled(); }
};

// Serves one accepted socket (TLS when the state has a TLS context) until it closes.
void StartConnection(const std::shared_ptr<ServerState>& state,
                     boost::asio::ip::tcp::socket socket);

}  // namespace http_internal
}  // namespace reflect
