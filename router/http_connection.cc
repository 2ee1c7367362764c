#include "router/http_connection.h"

#include <algorithm>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <ctime>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "router/http_errors.h"

namespace reflect {
namespace http_internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kReadChunkBytes = 4096;
constexpr std::chrono::milliseconds kLingerTimeout{2000};

std::string HttpDate() {
  const std::time_t now = std::time(nullptr);
  std::tm utc;
  gmtime_r(&now, &utc);
  char text[64];
  const size_t length = std::strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return std::string(text, length);
}

// Boost 1.74's beast::string_view is boost::string_view.
std::string_view View(beast::string_view text) {
  return std::string_view(text.data(), text.size());
}

// This absl build has its own string_view type too.
absl::string_view Absl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

std::string_view ReasonPhrase(int status) {
  if (status == 499) return "Client Closed Request";
  const std::string_view reason = View(http::obsolete_reason(static_cast<http::status>(status)));
  return reason.starts_with("<") ? std::string_view("Unknown") : reason;
}

// Header values come from our own code, but a CR or LF would let one forge headers: drop them.
std::string HeaderSafe(std::string_view text) {
  std::string safe(text);
  safe.erase(
      std::remove_if(safe.begin(), safe.end(), [](char c) { return c == '\r' || c == '\n'; }),
      safe.end());
  return safe;
}

// The status line and headers of a response; `content_length` unset means chunked (or, with
// `chunked` false, close-delimited).
std::string FormatHead(int status, std::string_view content_type,
                       std::optional<size_t> content_length, bool chunked, bool keep_alive,
                       const std::vector<HttpHeader>& headers) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", Absl(ReasonPhrase(status)),
                                  "\r\nServer: reflect\r\nDate: ", HttpDate(),
                                  "\r\nContent-Type: ", HeaderSafe(content_type), "\r\n");
  if (content_length) {
    absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
  } else if (chunked) {
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
  }
  absl::StrAppend(&head, "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n");
  for (const HttpHeader& header : headers) {
    absl::StrAppend(&head, HeaderSafe(header.name), ": ", HeaderSafe(header.value), "\r\n");
  }
  absl::StrAppend(&head, "\r\n");
  return head;
}

bool IsHttpParseError(const beast::error_code& error) {
  return &error.category() == &http::make_error_code(http::error::bad_method).category();
}

// One client connection: reads requests one at a time, hands each to its route's handler, and
// writes what the handler's writer queues. Everything runs on the connection's strand.
//
// Phases:
//   kHandshake (TLS) → kAwaitingRequest → kReadingRequest → kHandling → [kStreaming] → kResponded
//   kResponded → kAwaitingRequest (keep-alive) or kLingering (closing: drain input, then close)
//   any → kClosed
// While a request is handled, a read stays pending so a client that goes away is noticed at once
// (it completes with an error); bytes it returns (a pipelined request) wait for the next exchange.
template <class Stream>
class Connection final : public ConnectionBase,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  Connection(std::shared_ptr<ServerState> state, Stream stream, std::string remote_address)
      : state_(std::move(state)),
        stream_(std::move(stream)),
        remote_address_(std::move(remote_address)),
        read_deadline_{asio::steady_timer(stream_.get_executor())},
        write_deadline_{asio::steady_timer(stream_.get_executor())} {}

  ~Connection() override { Deregister(); }

  // Registers with the server (false while draining: the caller drops the connection) and starts
  // serving.
  bool Start() {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->draining) return false;
      registration_ = state_->connections.insert(state_->connections.end(), this->weak_from_this());
      registered_ = true;
      ++state_->open_connections;
    }
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->phase_ = Phase::kHandshake;
        self->Arm(&Connection::read_deadline_, self->state_->options.request_timeout);
        self->stream_.async_handshake(asio::ssl::stream_base::server,
                                      [self](const beast::error_code& error) {
                                        if (error || self->phase_ == Phase::kClosed) {
                                          self->Close();
                                          return;
                                        }
                                        self->AwaitRequest();
                                      });
      } else {
        self->AwaitRequest();
      }
    });
    return true;
  }

  bool Post(uint64_t exchange, Action action) override {
    std::shared_lock lock(state_->post_mutex);
    if (state_->posts_closed) return false;
    asio::post(stream_.get_executor(),
               [self = this->shared_from_this(), exchange, action = std::move(action)]() mutable {
                 self->Apply(exchange, std::move(action));
               });
    return true;
  }

  void BeginDrain() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      self->keep_alive_ = false;
      if (self->phase_ == Phase::kAwaitingRequest || self->phase_ == Phase::kHandshake) {
        self->Close();
      }
    });
  }

  void ForceClose() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Close(); });
  }

 private:
  enum class Phase {
    kHandshake,
    kAwaitingRequest,
    kReadingRequest,
    kHandling,
    kStreaming,
    kResponded,
    kLingering,
    kClosed
  };

  // A timer with a generation, so a stale expiry (already queued when re-armed) is ignored.
  struct Deadline {
    asio::steady_timer timer;
    uint64_t generation = 0;
  };

  void Arm(Deadline Connection::*deadline, std::chrono::milliseconds duration) {
    Deadline& slot = this->*deadline;
    const uint64_t generation = ++slot.generation;
    slot.timer.expires_after(duration);
    slot.timer.async_wait(
        [weak = this->weak_from_this(), deadline, generation](const beast::error_code& error) {
          const std::shared_ptr<Connection> self = weak.lock();
          if (error || !self || ((*self).*deadline).generation != generation) return;
          self->Close();  // a client too slow to send, to read, or idle for too long
        });
  }

  void Disarm(Deadline Connection::*deadline) {
    Deadline& slot = this->*deadline;
    ++slot.generation;
    slot.timer.cancel();
  }

  bool ExchangeOpen() const {
    return phase_ == Phase::kHandling || phase_ == Phase::kStreaming || phase_ == Phase::kResponded;
  }

  // Waits for the next request: parses at once what is buffered, else waits for a first byte
  // under the keep-alive timeout.
  void AwaitRequest() {
    phase_ = Phase::kAwaitingRequest;
    if (!keep_alive_) {
      Close();
      return;
    }
    if (buffer_.size() > 0) {
      ReadRequest();
      return;
    }
    Arm(&Connection::read_deadline_, state_->options.keep_alive_timeout);
    if (!reading_) ReadSome();
  }

  void ReadSome() {
    reading_ = true;
    stream_.async_read_some(
        buffer_.prepare(kReadChunkBytes),
        [self = this->shared_from_this()](const beast::error_code& error, size_t bytes) {
          self->OnReadSome(error, bytes);
        });
  }

  void OnReadSome(const beast::error_code& error, size_t bytes) {
    reading_ = false;
    if (phase_ == Phase::kClosed) return;
    if (phase_ == Phase::kLingering) {
      buffer_.consume(buffer_.size());
      if (error) {
        Close();
      } else {
        ReadSome();
      }
      return;
    }
    if (error) {
      Close();  // the client went away; mid-exchange Close tells the writer
      return;
    }
    buffer_.commit(bytes);
    if (phase_ == Phase::kAwaitingRequest) ReadRequest();
  }

  void ReadRequest() {
    phase_ = Phase::kReadingRequest;
    Arm(&Connection::read_deadline_, state_->options.request_timeout);
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(state_->options.max_body_bytes));
    parser_->header_limit(static_cast<uint32_t>(state_->options.max_header_bytes));
    reading_ = true;
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](const beast::error_code& error, size_t) {
          self->reading_ = false;
          if (self->phase_ == Phase::kClosed) return;
          if (error) {
            self->OnRequestError(error);
            return;
          }
          self->ReadBody();
        });
  }

  void ReadBody() {
    const auto& header = parser_->get();
    if (header.version() >= 11 && !parser_->is_done() &&
        absl::EqualsIgnoreCase(Absl(View(header[http::field::expect])), "100-continue")) {
      Queue("HTTP/1.1 100 Continue\r\n\r\n");
    }
    reading_ = true;
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](const beast::error_code& error, size_t) {
                       self->reading_ = false;
                       if (self->phase_ == Phase::kClosed) return;
                       if (error) {
                         self->OnRequestError(error);
                         return;
                       }
                       self->Dispatch();
                     });
  }

  void OnRequestError(const beast::error_code& error) {
    Disarm(&Connection::read_deadline_);
    parser_.reset();
    if (!IsHttpParseError(error) || error == http::error::end_of_stream ||
        error == http::error::partial_message) {
      Close();  // the client closed, or the socket failed
      return;
    }
    HttpResponse response;
    if (error == http::error::body_limit) {
      response = HttpErrorResponse(
          413, "request_too_large",
          absl::StrCat("request body larger than ", state_->options.max_body_bytes, " bytes"));
    } else if (error == http::error::header_limit) {
      response = HttpErrorResponse(
          431, "request_header_fields_too_large",
          absl::StrCat("request headers larger than ", state_->options.max_header_bytes, " bytes"));
    } else {
      response = HttpErrorResponse(400, "malformed_request",
                                   absl::StrCat("malformed HTTP request: ", error.message()));
    }
    keep_alive_ = false;
    buffer_.consume(buffer_.size());
    ++exchange_;
    phase_ = Phase::kHandling;
    Apply(exchange_, Action{ActionKind::kFullResponse, {}, std::move(response)});
  }

  void Dispatch() {
    Disarm(&Connection::read_deadline_);
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    HttpRequest request;
    request.method = std::string(View(message.method_string()));
    request.target = std::string(View(message.target()));
    const size_t query_start = request.target.find('?');
    request.path = request.target.substr(0, query_start);
    if (query_start != std::string::npos) request.query = request.target.substr(query_start + 1);
    request.version = static_cast<int>(message.version());
    for (const auto& field : message) {
      request.headers.push_back({absl::AsciiStrToLower(Absl(View(field.name_string()))),
                                 std::string(View(field.value()))});
    }
    request.body = std::move(message.body());
    request.remote_address = remote_address_;
    http_version_ = request.version;
    keep_alive_ = keep_alive_ && message.keep_alive();

    ++exchange_;
    phase_ = Phase::kHandling;
    auto writer = std::make_shared<HttpResponseWriter>(this->shared_from_this(), exchange_);
    writer_ = writer;
    if (buffer_.size() == 0) {
      buffer_.shrink_to_fit();  // an idle stream should not keep its request's buffer
      if (!reading_) ReadSome();
    }
    RouteRequest(std::move(request), std::move(writer));
  }

  // Answers 404, 405 or 401 itself; else runs the route's handler.
  void RouteRequest(HttpRequest request, std::shared_ptr<HttpResponseWriter> writer) {
    const auto path = state_->routes.find(request.path);
    if (path == state_->routes.end()) {
      writer->SendError(absl::NotFoundError(absl::StrCat("no such path: ", request.path)))
          .IgnoreError();  // a client already gone needs no answer
      return;
    }
    const http_internal::Route* route = nullptr;
    std::vector<std::string> methods;
    for (const http_internal::Route& candidate : path->second) {
      if (candidate.method == request.method) route = &candidate;
      methods.push_back(candidate.method);
    }
    if (route == nullptr) {
      HttpResponse response = HttpErrorResponse(
          405, "method_not_allowed",
          absl::StrCat("method ", request.method, " not allowed on ", request.path));
      response.headers.push_back({"Allow", absl::StrJoin(methods, ", ")});
      writer->Send(std::move(response)).IgnoreError();
      return;
    }
    if (route->access == RouteAccess::kAuthenticated) {
      const absl::Status authorized =
          state_->options.api_keys.CheckAuthorization(request.Header("authorization"));
      if (!authorized.ok()) {
        HttpResponse response = ErrorResponse(authorized);
        response.headers.push_back({"WWW-Authenticate", "Bearer"});
        writer->Send(std::move(response)).IgnoreError();
        return;
      }
    }
    try {
      route->handler(std::move(request), writer);
    } catch (const std::exception& exception) {
      writer->SendError(absl::InternalError(absl::StrCat("handler failed: ", exception.what())))
          .IgnoreError();
    }
  }

  void Apply(uint64_t exchange, Action action) {
    if (phase_ == Phase::kClosed || exchange != exchange_ || !ExchangeOpen()) return;
    const bool chunked = http_version_ >= 11;
    switch (action.kind) {
      case ActionKind::kFullResponse: {
        if (phase_ != Phase::kHandling) return;
        HttpResponse& response = action.response;
        phase_ = Phase::kResponded;
        Queue(FormatHead(response.status, response.content_type, response.body.size(), false,
                         keep_alive_, response.headers) +
              response.body);
        return;
      }
      case ActionKind::kStartStream:
        if (phase_ != Phase::kHandling) return;
        phase_ = Phase::kStreaming;
        if (!chunked) keep_alive_ = false;  // HTTP/1.0: the end of the stream is the close
        Queue(FormatHead(200, "text/event-stream", std::nullopt, chunked, keep_alive_,
                         {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}}));
        return;
      case ActionKind::kEvent:
      case ActionKind::kFinishStream: {
        if (phase_ != Phase::kStreaming) return;
        std::string bytes = chunked
                                ? absl::StrFormat("%x\r\n%s\r\n", action.bytes.size(), action.bytes)
                                : std::move(action.bytes);
        if (action.kind == ActionKind::kFinishStream) {
          if (chunked) bytes += "0\r\n\r\n";
          phase_ = Phase::kResponded;
        }
        Queue(std::move(bytes));
        return;
      }
      case ActionKind::kAbandon:
        if (phase_ == Phase::kHandling) {
          phase_ = Phase::kResponded;
          const HttpResponse response =
              ErrorResponse(absl::InternalError("the request's handler ended without a response"));
          Queue(FormatHead(response.status, response.content_type, response.body.size(), false,
                           keep_alive_, response.headers) +
                response.body);
        } else if (phase_ == Phase::kStreaming) {
          Close();  // no "[DONE]": the client sees a truncated stream
        }
        return;
    }
  }

  void Queue(std::string bytes) {
    queued_bytes_ += static_cast<int64_t>(bytes.size());
    outgoing_.push_back(std::move(bytes));
    if (queued_bytes_ > state_->options.max_queued_response_bytes) {
      Close();  // the client reads slower than we produce
      return;
    }
    if (!writing_) WriteQueued();
  }

  void WriteQueued() {
    writing_ = true;
    in_flight_.swap(outgoing_);
    outgoing_.clear();
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(in_flight_.size());
    for (const std::string& bytes : in_flight_) buffers.push_back(asio::buffer(bytes));
    Arm(&Connection::write_deadline_, state_->options.write_timeout);
    asio::async_write(stream_, buffers,
                      [self = this->shared_from_this()](const beast::error_code& error, size_t) {
                        self->OnWritten(error);
                      });
  }

  void OnWritten(const beast::error_code& error) {
    writing_ = false;
    if (phase_ == Phase::kClosed) return;
    Disarm(&Connection::write_deadline_);
    if (error) {
      Close();
      return;
    }
    for (const std::string& bytes : in_flight_) queued_bytes_ -= static_cast<int64_t>(bytes.size());
    in_flight_.clear();
    if (!outgoing_.empty()) {
      WriteQueued();
    } else if (phase_ == Phase::kResponded) {
      FinishExchange();
    }
  }

  void FinishExchange() {
    writer_.reset();
    if (keep_alive_) {
      AwaitRequest();
    } else {
      Linger();
    }
  }

  // Closing with unread input makes the kernel send a reset, which can destroy the response in
  // flight (a 413 whose body is still arriving): shut down sending, read and drop the rest for a
  // moment, then close.
  void Linger() {
    if constexpr (kTls) {
      Close();
    } else {
      phase_ = Phase::kLingering;
      beast::error_code ignored;
      stream_.shutdown(tcp::socket::shutdown_send, ignored);
      buffer_.consume(buffer_.size());
      Arm(&Connection::read_deadline_, kLingerTimeout);
      if (!reading_) ReadSome();
    }
  }

  void Close() {
    if (phase_ == Phase::kClosed) return;
    // A response fully written is complete, whatever the client does next.
    const bool exchange_open = phase_ == Phase::kHandling || phase_ == Phase::kStreaming ||
                               (phase_ == Phase::kResponded && queued_bytes_ > 0);
    phase_ = Phase::kClosed;
    Disarm(&Connection::read_deadline_);
    Disarm(&Connection::write_deadline_);
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).close(ignored);
    outgoing_.clear();
    const std::shared_ptr<HttpResponseWriter> writer = writer_.lock();
    writer_.reset();
    Deregister();
    if (exchange_open && writer) NotifyCancelled(*writer);
  }

  void Deregister() {
    if (!registered_) return;
    registered_ = false;
    std::lock_guard lock(state_->mutex);
    state_->connections.erase(registration_);
    --state_->open_connections;
    state_->connection_closed.notify_all();
  }

  const std::shared_ptr<ServerState> state_;
  Stream stream_;
  const std::string remote_address_;
  Deadline read_deadline_;   // handshake, keep-alive, request and linger timeouts
  Deadline write_deadline_;  // the write in flight
  std::list<std::weak_ptr<ConnectionBase>>::iterator registration_;
  bool registered_ = false;
  Phase phase_ = Phase::kAwaitingRequest;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool reading_ = false;  // a read is pending on stream_
  bool writing_ = false;  // a write is pending on stream_
  bool keep_alive_ = true;
  int http_version_ = 11;
  uint64_t exchange_ = 0;  // requests dispatched so far; the current one's number
  std::weak_ptr<HttpResponseWriter> writer_;
  std::vector<std::string> outgoing_;   // queued, not yet handed to the socket
  std::vector<std::string> in_flight_;  // being written
  int64_t queued_bytes_ = 0;            // in outgoing_ and in_flight_
};

}  // namespace

void StartConnection(const std::shared_ptr<ServerState>& state, tcp::socket socket) {
  beast::error_code error;
  socket.set_option(tcp::no_delay(true), error);  // an SSE event must leave at once
  const tcp::endpoint remote = socket.remote_endpoint(error);
  std::string remote_address = error
                                   ? std::string("unknown")
                                   : absl::StrCat(remote.address().to_string(), ":", remote.port());
  if (state->tls_context) {
    using TlsStream = asio::ssl::stream<tcp::socket>;
    auto connection = std::make_shared<Connection<TlsStream>>(
        state, TlsStream(std::move(socket), *state->tls_context), std::move(remote_address));
    connection->Start();
  } else {
    auto connection = std::make_shared<Connection<tcp::socket>>(state, std::move(socket),
                                                                std::move(remote_address));
    connection->Start();
  }
}

}  // namespace http_internal
}  // namespace reflect
