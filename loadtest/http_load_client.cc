#include "loadtest/http_load_client.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "loadtest/chat_completion_stream.h"
#include "nlohmann/json.hpp"

namespace reflect::loadtest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Json = nlohmann::json;
using boost::system::error_code;

constexpr size_t kReadBufferBytes = 4096;
constexpr size_t kMaxErrorBodyBytes = 4096;

// The message of an OpenAI-style error body, or the body itself.
std::string ErrorMessage(const std::string& body) {
  const Json document = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (document.is_object() && document.contains("error") && document["error"].is_object() &&
      document["error"].contains("message") && document["error"]["message"].is_string()) {
    return document["error"]["message"].get<std::string>();
  }
  return body;
}

}  // namespace

std::string ChatCompletionBody(const PlannedRequest& request, const std::string& model) {
  Json body = {{"messages", Json::array({{{"role", "user"}, {"content", request.user_message}}})},
               {"max_tokens", request.max_tokens},
               {"ignore_eos", request.ignore_eos},
               {"temperature", request.temperature},
               {"seed", request.seed},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  if (!model.empty()) body["model"] = model;
  if (request.add_reflection_system_prompt) body["reflection"] = true;
  if (request.priority != 0) body["priority"] = request.priority;
  return body.dump();
}

// One request on its own connection. Every handler runs on the socket's strand, so the state
// needs no lock; the handlers' shared_ptr copies keep the exchange alive until the last one ran.
//
// Lifecycle: connect → write the request → read the response head → read the body (SSE events,
// or an error body) → Finish (exactly once: also on an I/O error, the deadline, or Cancel).
class HttpLoadClient::Exchange final : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(HttpLoadClient& owner, int64_t exchange_id, const PlannedRequest& planned,
           absl::Time run_start, RecordCallback done)
      : owner_(owner),
        exchange_id_(exchange_id),
        socket_(asio::make_strand(owner.io_context_)),
        deadline_(socket_.get_executor()),
        done_(std::move(done)),
        clock_(absl::Now()),
        stream_(clock_) {
    record_.index = planned.index;
    record_.sent = clock_.sent() - run_start;
    request_.method(http::verb::post);
    request_.target("/v1/chat/completions");
    request_.set(http::field::host, owner.options_.address);
    request_.set(http::field::content_type, "application/json");
    request_.set(http::field::accept, "text/event-stream");
    request_.set(http::field::connection, "close");
    if (!owner.options_.api_key.empty()) {
      request_.set(http::field::authorization, "Bearer " + owner.options_.api_key);
    }
    request_.body() = ChatCompletionBody(planned, owner.options_.model);
    request_.prepare_payload();
    // No limit (a long stream is long); not boost::none, which Boost 1.74 compares as exceeded.
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
  }

  void Start() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->deadline_.expires_after(
          absl::ToChronoNanoseconds(self->owner_.options_.request_timeout));
      self->deadline_.async_wait([self](error_code error) {
        if (error) return;  // cancelled: the exchange finished first
        self->Finish(RequestOutcome::kTimeout, "DEADLINE_EXCEEDED: the client's deadline passed");
      });
      self->socket_.async_connect(self->owner_.endpoint_,
                                  [self](error_code error) { self->OnConnected(error); });
    });
  }

  void Cancel() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      self->Finish(RequestOutcome::kError, "CANCELLED: the client is closing");
    });
  }

 private:
  void OnConnected(error_code error) {
    if (error) return Fail("connect", error);
    http::async_write(socket_, request_, [self = shared_from_this()](error_code error, size_t) {
      if (error) return self->Fail("write", error);
      http::async_read_header(self->socket_, self->buffer_, self->parser_,
                              [self](error_code error, size_t) { self->OnHeader(error); });
    });
  }

  void OnHeader(error_code error) {
    if (error) return Fail("read", error);
    status_ = parser_.get().result_int();
    ReadBody();
  }

  void ReadBody() {
    if (finished_) return;
    if (parser_.is_done()) return OnBodyEnd();
    parser_.get().body().data = read_buffer_;
    parser_.get().body().size = kReadBufferBytes;
    http::async_read_some(
        socket_, buffer_, parser_,
        [self = shared_from_this()](error_code error, size_t) { self->OnBodyBytes(error); });
  }

  void OnBodyBytes(error_code error) {
    if (error && error != http::error::need_buffer) return Fail("read", error);
    const size_t received = kReadBufferBytes - parser_.get().body().size;
    const std::string_view bytes(read_buffer_, received);
    if (status_ == 200) {
      stream_.Feed(bytes, absl::Now());
    } else if (error_body_.size() < kMaxErrorBodyBytes) {
      error_body_.append(bytes.substr(0, kMaxErrorBodyBytes - error_body_.size()));
    }
    ReadBody();
  }

  void OnBodyEnd() {
    if (status_ == 429) {
      if (const auto found = parser_.get().find(http::field::retry_after);
          found != parser_.get().end()) {
        int64_t seconds = 0;
        if (absl::SimpleAtoi(absl::string_view(found->value().data(), found->value().size()),
                             &seconds)) {
          record_.retry_after = absl::Seconds(seconds);
        }
      }
      return Finish(RequestOutcome::kRejected, "HTTP 429: " + ErrorMessage(error_body_));
    }
    if (status_ != 200) {
      return Finish(RequestOutcome::kError,
                    absl::StrCat("HTTP ", status_, ": ", ErrorMessage(error_body_)));
    }
    if (stream_.error().has_value()) return Finish(RequestOutcome::kError, *stream_.error());
    if (!stream_.usage().has_value()) {
      return Finish(RequestOutcome::kError, "the stream ended without a usage chunk");
    }
    Finish(RequestOutcome::kOk, "");
  }

  void Fail(const char* step, error_code error) {
    Finish(RequestOutcome::kError, absl::StrCat(step, ": ", error.message()));
  }

  void Finish(RequestOutcome outcome, std::string error) {
    if (finished_) return;
    finished_ = true;
    error_code ignored;
    deadline_.cancel();
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (const std::optional<ChatCompletionUsage>& usage = stream_.usage(); usage.has_value()) {
      clock_.ReconcileTokenCount(usage->completion_tokens);
      record_.prompt_tokens = usage->prompt_tokens;
      record_.thinking_tokens = usage->thinking_tokens;
      record_.reflection_tokens = usage->reflection_tokens;
    }
    clock_.Fill(absl::Now(), record_);
    record_.outcome = outcome;
    record_.error = std::move(error);
    done_(std::move(record_));
    owner_.in_flight_.Finish(exchange_id_);  // may destroy this
  }

  HttpLoadClient& owner_;
  const int64_t exchange_id_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer deadline_;
  RecordCallback done_;
  http::request<http::string_body> request_;
  beast::flat_buffer buffer_;
  http::response_parser<http::buffer_body> parser_;
  char read_buffer_[kReadBufferBytes];
  int status_ = 0;
  std::string error_body_;  // a non-200 answer's body, capped
  TokenClock clock_;
  ChatCompletionStream stream_;
  bool finished_ = false;
  RequestRecord record_;
};

absl::StatusOr<std::unique_ptr<HttpLoadClient>> HttpLoadClient::Create(LoadClientOptions options) {
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be at least 1, got ", options.threads));
  }
  if (options.request_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("request_timeout must be positive");
  }
  const size_t colon = options.address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError("address must be host:port, got \"" + options.address + "\"");
  }
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string port = options.address.substr(colon + 1);
  asio::io_context resolver_context;
  asio::ip::tcp::resolver resolver(resolver_context);
  error_code error;
  const asio::ip::tcp::resolver::results_type endpoints = resolver.resolve(host, port, error);
  if (error || endpoints.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", options.address, ": ", error.message()));
  }
  return std::unique_ptr<HttpLoadClient>(
      new HttpLoadClient(std::move(options), endpoints.begin()->endpoint()));
}

HttpLoadClient::HttpLoadClient(LoadClientOptions options, asio::ip::tcp::endpoint endpoint)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      work_(asio::make_work_guard(io_context_)) {
  for (int index = 0; index < options_.threads; ++index) {
    threads_.emplace_back([this] { io_context_.run(); });
  }
}

HttpLoadClient::~HttpLoadClient() {
  for (const std::shared_ptr<Exchange>& exchange : in_flight_.Close()) exchange->Cancel();
  in_flight_.Drain();
  // Every exchange has finished: the threads return once the aborted operations' handlers ran.
  work_.reset();
  for (std::thread& thread : threads_) thread.join();
}

void HttpLoadClient::Send(const PlannedRequest& request, absl::Time run_start,
                          RecordCallback done) {
  std::shared_ptr<Exchange> exchange = in_flight_.Add([&](int64_t exchange_id) {
    return std::make_shared<Exchange>(*this, exchange_id, request, run_start, std::move(done));
  });
  if (exchange == nullptr) {
    done(ClosingClientRecord(request, run_start));
    return;
  }
  exchange->Start();
}

void HttpLoadClient::Drain() { in_flight_.Drain(); }

}  // namespace reflect::loadtest
