#include "router/http_server.h"

#include <pthread.h>

#include <algorithm>
#include <boost/beast/core.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "router/http_connection.h"
#include "router/http_errors.h"

namespace reflect {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace http_internal {
namespace {

// This absl build has its own string_view type.
absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

void Accept(const std::shared_ptr<ServerState>& state) {
  state->acceptor->async_accept(
      asio::make_strand(state->io_context),
      [state](const beast::error_code& error, tcp::socket socket) {
        if (!state->acceptor->is_open()) return;
        if (error) {
          // Out of descriptors or a connection reset before accept: back off briefly.
          auto timer = std::make_shared<asio::steady_timer>(state->acceptor->get_executor(),
                                                            std::chrono::milliseconds(50));
          timer->async_wait([state, timer](const beast::error_code&) { Accept(state); });
          return;
        }
        StartConnection(state, std::move(socket));
        Accept(state);
      });
}

}  // namespace
}  // namespace http_internal

std::optional<std::string_view> HttpRequest::Header(std::string_view name) const {
  for (const HttpHeader& header : headers) {
    if (absl::EqualsIgnoreCase(header.name, http_internal::Absl(name))) return header.value;
  }
  return std::nullopt;
}

HttpResponseWriter::HttpResponseWriter(std::shared_ptr<http_internal::ConnectionBase> connection,
                                       uint64_t exchange)
    : connection_(std::move(connection)), exchange_(exchange) {}

HttpResponseWriter::~HttpResponseWriter() {
  if (phase_ != Phase::kComplete && !cancelled_) {
    connection_->Post(exchange_,
                      http_internal::Action{http_internal::ActionKind::kAbandon, {}, {}});
  }
}

absl::Status HttpResponseWriter::Advance(Phase from, Phase to, http_internal::ActionKind kind,
                                         std::string bytes, HttpResponse response) {
  std::lock_guard lock(mutex_);
  if (cancelled_) return absl::CancelledError("client disconnected");
  if (phase_ != from) {
    return absl::FailedPreconditionError(phase_ == Phase::kComplete
                                             ? "the response is already complete"
                                             : "call out of order for this response");
  }
  if (!connection_->Post(exchange_,
                         http_internal::Action{kind, std::move(bytes), std::move(response)})) {
    cancelled_ = true;
    return absl::CancelledError("server stopped");
  }
  phase_ = to;
  return absl::OkStatus();
}

absl::Status HttpResponseWriter::Send(HttpResponse response) {
  return Advance(Phase::kIdle, Phase::kComplete, http_internal::ActionKind::kFullResponse, {},
                 std::move(response));
}

absl::Status HttpResponseWriter::SendError(const absl::Status& error) {
  return Send(ErrorResponse(error));
}

absl::Status HttpResponseWriter::StartEventStream() {
  return Advance(Phase::kIdle, Phase::kStreaming, http_internal::ActionKind::kStartStream, {}, {});
}

absl::Status HttpResponseWriter::SendEvent(std::string_view data) {
  std::string event;
  event.reserve(data.size() + 8);
  event.append("data: ").append(data).append("\n\n");
  return Advance(Phase::kStreaming, Phase::kStreaming, http_internal::ActionKind::kEvent,
                 std::move(event), {});
}

absl::Status HttpResponseWriter::FinishEventStream() {
  return Advance(Phase::kStreaming, Phase::kComplete, http_internal::ActionKind::kFinishStream,
                 "data: [DONE]\n\n", {});
}

void HttpResponseWriter::OnCancel(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!cancelled_) {
      cancel_callback_ = std::move(callback);
      return;
    }
  }
  callback();
}

bool HttpResponseWriter::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void HttpResponseWriter::NotifyCancelled() {
  std::function<void()> callback;
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return;
    cancelled_ = true;
    callback = std::move(cancel_callback_);
  }
  if (callback) callback();
}

HttpServer::HttpServer(HttpServerOptions options)
    : state_(std::make_shared<http_internal::ServerState>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(std::chrono::milliseconds(0)); }

void HttpServer::AddRoute(std::string_view method, std::string_view path, HttpHandler handler,
                          RouteAccess access) {
  state_->routes[std::string(path)].push_back(
      http_internal::Route{std::string(method), std::move(handler), access});
}

absl::Status HttpServer::Start() {
  if (started_) return absl::FailedPreconditionError("HttpServer::Start called twice");
  const HttpServerOptions& options = state_->options;
  if (options.io_threads < 0 || options.max_body_bytes < 0 || options.max_header_bytes <= 0 ||
      options.max_header_bytes > UINT32_MAX) {
    return absl::InvalidArgumentError("HttpServerOptions: negative thread count or bad limits");
  }
  if (options.tls) {
    state_->tls_context.emplace(asio::ssl::context::tls_server);
    asio::ssl::context& context = *state_->tls_context;
    context.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1);
    beast::error_code error;
    context.use_certificate_chain_file(options.tls->certificate_chain_file, error);
    if (error) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS certificate ", options.tls->certificate_chain_file, ": ", error.message()));
    }
    context.use_private_key_file(options.tls->private_key_file, asio::ssl::context::pem, error);
    if (error) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS private key ", options.tls->private_key_file, ": ", error.message()));
    }
  }
  beast::error_code error;
  const asio::ip::address address = asio::ip::make_address(options.address, error);
  if (error) {
    return absl::InvalidArgumentError(absl::StrCat("bad listen address ", options.address));
  }
  tcp::acceptor& acceptor = state_->acceptor.emplace(asio::make_strand(state_->io_context));
  const tcp::endpoint endpoint(address, options.port);
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                               options.port, ": ", error.message()));
  }
  port_ = acceptor.local_endpoint(error).port();
  started_ = true;
  state_->work_guard.emplace(state_->io_context.get_executor());
  http_internal::Accept(state_);
  const int thread_count = options.io_threads > 0
                               ? options.io_threads
                               : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int index = 0; index < thread_count; ++index) {
    threads_.emplace_back([state = state_] {
      pthread_setname_np(pthread_self(), "reflect-http");
      state->io_context.run();
    });
  }
  return absl::OkStatus();
}

uint16_t HttpServer::port() const { return port_; }

void HttpServer::Stop(std::chrono::milliseconds drain_timeout) {
  if (!started_ || stopped_) return;
  stopped_ = true;
  const auto snapshot = [this] {
    std::vector<std::shared_ptr<http_internal::ConnectionBase>> connections;
    std::lock_guard lock(state_->mutex);
    state_->draining = true;
    for (const auto& weak : state_->connections) {
      if (auto connection = weak.lock()) connections.push_back(std::move(connection));
    }
    return connections;
  };
  const auto wait_closed = [this](std::chrono::milliseconds timeout) {
    std::unique_lock lock(state_->mutex);
    state_->connection_closed.wait_for(lock, timeout,
                                       [this] { return state_->open_connections == 0; });
  };
  asio::post(state_->acceptor->get_executor(), [state = state_] {
    beast::error_code ignored;
    state->acceptor->close(ignored);
  });
  for (const auto& connection : snapshot()) connection->BeginDrain();
  wait_closed(drain_timeout);
  for (const auto& connection : snapshot()) connection->ForceClose();
  wait_closed(std::chrono::seconds(5));
  {
    std::unique_lock lock(state_->post_mutex);
    state_->posts_closed = true;
  }
  state_->work_guard.reset();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

int64_t HttpServer::open_connections() const { return state_->open_connections; }

}  // namespace reflect
