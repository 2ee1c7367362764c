// HttpServer over real sockets on 127.0.0.1: a raw-socket HTTP client (and an Asio TLS client)
// talks to a server on an ephemeral port.
#include "router/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "router/http_errors.h"
#include "router/openai_protocol.h"

namespace reflect {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

struct ParsedResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
};

// Parses one response at the front of `data`; nullopt while incomplete. Erases what it used.
std::optional<ParsedResponse> TakeResponse(std::string& data) {
  const size_t header_end = data.find("\r\n\r\n");
  if (header_end == std::string::npos) return std::nullopt;
  ParsedResponse response;
  response.status = std::atoi(data.substr(9, 3).c_str());
  size_t line_start = data.find("\r\n") + 2;
  while (line_start < header_end) {
    const size_t line_end = data.find("\r\n", line_start);
    const std::string line = data.substr(line_start, line_end - line_start);
    const size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    response.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    line_start = line_end + 2;
  }
  size_t position = header_end + 4;
  if (response.headers.count("content-length")) {
    const size_t length = std::stoul(response.headers["content-length"]);
    if (data.size() < position + length) return std::nullopt;
    response.body = data.substr(position, length);
    data.erase(0, position + length);
    return response;
  }
  if (response.headers["transfer-encoding"] == "chunked") {
    while (true) {
      const size_t size_end = data.find("\r\n", position);
      if (size_end == std::string::npos) return std::nullopt;
      const size_t size = std::stoul(data.substr(position, size_end - position), nullptr, 16);
      if (data.size() < size_end + 2 + size + 2) return std::nullopt;
      response.body += data.substr(size_end + 2, size);
      position = size_end + 2 + size + 2;
      if (size == 0) break;
    }
    data.erase(0, position);
    return response;
  }
  return std::nullopt;  // close-delimited: not used by these tests
}

// A blocking HTTP client over one raw TCP socket.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawClient() { Close(); }

  bool connected() const { return connected_; }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  void Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t sent = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return;
      bytes.remove_prefix(static_cast<size_t>(sent));
    }
  }

  // Reads what arrives within `timeout` into the buffer; false on end of stream or error.
  bool ReadSome(std::chrono::milliseconds timeout) {
    pollfd poll_fd{fd_, POLLIN, 0};
    if (poll(&poll_fd, 1, static_cast<int>(timeout.count())) <= 0) return true;
    char chunk[16384];
    const ssize_t received = recv(fd_, chunk, sizeof(chunk), 0);
    if (received <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(received));
    return true;
  }

  // Reads until `needle` is in the buffer; false on timeout or close.
  bool ReadUntil(std::string_view needle, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buffer_.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline || !ReadSome(50ms)) return false;
    }
    return true;
  }

  // True when the server closes the connection within `timeout`.
  bool ClosedWithin(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!ReadSome(50ms)) return true;
    }
    return false;
  }

  std::optional<ParsedResponse> ReadResponse(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (std::optional<ParsedResponse> response = TakeResponse(buffer_)) return response;
      if (std::chrono::steady_clock::now() > deadline || !ReadSome(50ms)) return std::nullopt;
    }
  }

  std::optional<ParsedResponse> Request(const std::string& request) {
    Send(request);
    return ReadResponse();
  }

  const std::string& buffer() const { return buffer_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

std::string Get(std::string_view path, std::string_view extra_headers = "") {
  return std::string("GET ") + std::string(path) + " HTTP/1.1\r\nHost: localhost\r\n" +
         std::string(extra_headers) + "\r\n";
}

std::string Post(std::string_view path, std::string_view body, std::string_view extra = "") {
  return std::string("POST ") + std::string(path) +
         " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + std::string(extra) + "\r\n" + std::string(body);
}

HttpResponse Text(std::string body) {
  HttpResponse response;
  response.content_type = "text/plain";
  response.body = std::move(body);
  return response;
}

int ThreadCount() {
  int count = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/task")) {
    ++count;
  }
  return count;
}

// Waits up to `timeout` for `condition`.
template <class Condition>
bool Eventually(Condition condition, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Writers of open streams, shared between handlers (I/O threads) and the test.
struct StreamRegistry {
  std::mutex mutex;
  std::vector<std::shared_ptr<HttpResponseWriter>> writers;
  std::atomic<int> started{0};
  std::atomic<int> cancelled{0};

  void Add(std::shared_ptr<HttpResponseWriter> writer) {
    writer->OnCancel([this] { ++cancelled; });
    std::lock_guard lock(mutex);
    writers.push_back(std::move(writer));
    ++started;
  }
  std::shared_ptr<HttpResponseWriter> Get(size_t index) {
    std::lock_guard lock(mutex);
    return writers.at(index);
  }
};

class HttpServerTest : public testing::Test {
 protected:
  void StartServer(HttpServerOptions options = {}) {
    options.address = "127.0.0.1";
    options.port = 0;
    if (options.io_threads == 0) options.io_threads = 2;
    server_ = std::make_unique<HttpServer>(std::move(options));
    server_->AddRoute(
        "GET", "/healthz",
        [](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
          writer->Send(Text("ok")).IgnoreError();
        },
        RouteAccess::kPublic);
    server_->AddRoute("GET", "/v1/models",
                      [](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
                        writer->Send(Text("models")).IgnoreError();
                      });
    server_->AddRoute("POST", "/echo",
                      [](HttpRequest request, std::shared_ptr<HttpResponseWriter> writer) {
                        writer
                            ->Send(Text(request.method + " " + request.path + "?" + request.query +
                                        " " + request.body))
                            .IgnoreError();
                      });
    server_->AddRoute("GET", "/stream",
                      [this](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
                        ASSERT_TRUE(writer->StartEventStream().ok());
                        ASSERT_TRUE(writer->SendEvent("{\"n\":1}").ok());
                        streams_.Add(std::move(writer));
                      });
    server_->AddRoute("GET", "/drop", [](HttpRequest, std::shared_ptr<HttpResponseWriter>) {});
    server_->AddRoute("GET", "/busy", [](HttpRequest, std::shared_ptr<HttpResponseWriter> writer) {
      absl::Status busy = absl::ResourceExhaustedError("the queue is full");
      SetRetryAfter(2500ms, busy);
      writer->SendError(busy).IgnoreError();
    });
    server_->AddRoute("POST", "/v1/chat/completions",
                      [](HttpRequest request, std::shared_ptr<HttpResponseWriter> writer) {
                        OpenAiLimits limits;
                        limits.served_model_names = {"test-model"};
                        const absl::StatusOr<CompletionRequest> parsed = ParseCompletionRequest(
                            CompletionEndpoint::kChatCompletions, request.body, limits);
                        if (!parsed.ok()) {
                          writer->SendError(parsed.status()).IgnoreError();
                          return;
                        }
                        writer->Send(Text(parsed->model)).IgnoreError();
                      });
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
    ASSERT_NE(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Stop(0ms);
  }

  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  StreamRegistry streams_;
};

TEST_F(HttpServerTest, RoutesAnd404And405) {
  StartServer();
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Get("/healthz"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "ok");
  EXPECT_EQ(response->headers["content-type"], "text/plain");
  EXPECT_EQ(response->headers["connection"], "keep-alive");

  response = client.Request(Get("/nowhere"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(Json::parse(response->body)["error"]["code"], "not_found");

  response = client.Request(Post("/healthz", ""));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(response->headers["allow"], "GET");
  EXPECT_EQ(Json::parse(response->body)["error"]["type"], "invalid_request_error");

  response = client.Request(Post("/echo?x=1", "hello"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "POST /echo?x=1 hello");
}

TEST_F(HttpServerTest, KeepAliveAndPipelining) {
  StartServer();
  RawClient client(port_);
  for (int index = 0; index < 5; ++index) {
    std::optional<ParsedResponse> response = client.Request(Post("/echo", std::to_string(index)));
    ASSERT_TRUE(response);
    EXPECT_EQ(response->body, "POST /echo? " + std::to_string(index));
  }
  client.Send(Post("/echo", "a") + Post("/echo", "b") + Get("/healthz"));
  for (const std::string expected : {"POST /echo? a", "POST /echo? b", "ok"}) {
    std::optional<ParsedResponse> response = client.ReadResponse();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->body, expected);
  }
  EXPECT_EQ(server_->open_connections(), 1);

  std::optional<ParsedResponse> last = client.Request(Get("/healthz", "Connection: close\r\n"));
  ASSERT_TRUE(last);
  EXPECT_EQ(last->headers["connection"], "close");
  EXPECT_TRUE(client.ClosedWithin(2s));
}

TEST_F(HttpServerTest, BodyLimitGives413AndServerKeepsServing) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Post("/echo", std::string(4096, 'x')));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(Json::parse(response->body)["error"]["code"], "request_too_large");
  EXPECT_TRUE(client.ClosedWithin(3s));

  RawClient next(port_);
  std::optional<ParsedResponse> fine = next.Request(Post("/echo", std::string(1024, 'y')));
  ASSERT_TRUE(fine);
  EXPECT_EQ(fine->status, 200);
}

TEST_F(HttpServerTest, HeaderLimitGives431) {
  HttpServerOptions options;
  options.max_header_bytes = 1024;
  StartServer(options);
  RawClient client(port_);
  std::optional<ParsedResponse> response =
      client.Request(Get("/healthz", "X-Big: " + std::string(4096, 'h') + "\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 431);
}

TEST_F(HttpServerTest, MalformedHttpGives400AndServerKeepsServing) {
  StartServer();
  for (const std::string& garbage :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
        std::string("POST /echo HTTP/1.1\r\nContent-Length: nope\r\n\r\n"),
        std::string("GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")}) {
    RawClient client(port_);
    std::optional<ParsedResponse> response = client.Request(garbage);
    ASSERT_TRUE(response) << garbage;
    EXPECT_EQ(response->status, 400) << garbage;
    EXPECT_EQ(Json::parse(response->body)["error"]["code"], "malformed_request");
  }
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Get("/healthz"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST_F(HttpServerTest, InvalidRequestBodiesGet400AndServerKeepsServing) {
  StartServer();
  RawClient client(port_);
  for (const std::string& body :
       {std::string("{not json"), std::string(R"({"messages": []})"),
        std::string(R"({"messages": [{"role": "user", "content": "x"}], "temperature": -1})")}) {
    std::optional<ParsedResponse> response = client.Request(Post("/v1/chat/completions", body));
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 400);
    EXPECT_EQ(response->headers["content-type"], "application/json");
    EXPECT_FALSE(Json::parse(response->body)["error"]["param"].is_null());
  }
  std::optional<ParsedResponse> unknown =
      client.Request(Post("/v1/chat/completions",
                          R"({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})"));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  std::optional<ParsedResponse> good = client.Request(
      Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})"));
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200);
  EXPECT_EQ(good->body, "test-model");
}

TEST_F(HttpServerTest, ExpectContinue) {
  StartServer();
  RawClient client(port_);
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(client.ReadUntil("HTTP/1.1 100 Continue\r\n\r\n"));
  client.Send("hello");
  ASSERT_TRUE(client.ReadUntil("POST /echo? hello"));
}

TEST_F(HttpServerTest, RetryAfterOn429) {
  StartServer();
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Get("/busy"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 429);
  EXPECT_EQ(response->headers["retry-after"], "3");
  EXPECT_EQ(Json::parse(response->body)["error"]["type"], "rate_limit_error");
}

TEST_F(HttpServerTest, HandlerThatDropsTheWriterGets500) {
  StartServer();
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Get("/drop"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_EQ(client.Request(Get("/healthz"))->status, 200);
}

TEST_F(HttpServerTest, EventsArriveIncrementallyAndStreamEndsWithDone) {
  StartServer();
  RawClient client(port_);
  client.Send(Get("/stream"));
  ASSERT_TRUE(client.ReadUntil("data: {\"n\":1}\n\n"));
  EXPECT_NE(client.buffer().find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_EQ(client.buffer().find("[DONE]"), std::string::npos);
  ASSERT_TRUE(Eventually([&] { return streams_.started == 1; }));
  const std::shared_ptr<HttpResponseWriter> writer = streams_.Get(0);

  // Each event is delivered before the next is written.
  ASSERT_TRUE(writer->SendEvent("{\"n\":2}").ok());
  ASSERT_TRUE(client.ReadUntil("data: {\"n\":2}\n\n"));
  std::thread producer([writer] {  // writers may be driven from any thread
    EXPECT_TRUE(writer->SendEvent("{\"n\":3}").ok());
    EXPECT_TRUE(writer->FinishEventStream().ok());
  });
  producer.join();
  EXPECT_EQ(writer->SendEvent("late").code(), absl::StatusCode::kFailedPrecondition);
  std::optional<ParsedResponse> response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers["transfer-encoding"], "chunked");
  EXPECT_EQ(response->body,
            "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: [DONE]\n\n");

  // The connection serves on after the stream, and a finished stream is never cancelled.
  EXPECT_EQ(client.Request(Get("/healthz"))->status, 200);
  client.Close();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(streams_.cancelled, 0);
}

TEST_F(HttpServerTest, ClientDisconnectMidStreamCancelsPromptly) {
  StartServer();
  RawClient client(port_);
  client.Send(Get("/stream"));
  ASSERT_TRUE(client.ReadUntil("data: {\"n\":1}"));
  ASSERT_TRUE(Eventually([&] { return streams_.started == 1; }));
  const auto closed_at = std::chrono::steady_clock::now();
  client.Close();
  ASSERT_TRUE(Eventually([&] { return streams_.cancelled == 1; }, 1s));
  EXPECT_LT(std::chrono::steady_clock::now() - closed_at, 500ms);
  const std::shared_ptr<HttpResponseWriter> writer = streams_.Get(0);
  EXPECT_TRUE(writer->cancelled());
  EXPECT_EQ(writer->SendEvent("{}").code(), absl::StatusCode::kCancelled);
  bool called = false;
  writer->OnCancel([&] { called = true; });  // registered after the fact: runs at once
  EXPECT_TRUE(called);
  EXPECT_TRUE(Eventually([&] { return server_->open_connections() == 0; }));
}

TEST_F(HttpServerTest, StreamToAClientThatStopsReadingIsCancelled) {
  HttpServerOptions options;
  options.max_queued_response_bytes = 1 << 20;
  StartServer(options);
  RawClient client(port_);
  client.Send(Get("/stream"));
  ASSERT_TRUE(client.ReadUntil("data: {\"n\":1}"));
  ASSERT_TRUE(Eventually([&] { return streams_.started == 1; }));
  const std::shared_ptr<HttpResponseWriter> writer = streams_.Get(0);
  const std::string event(64 << 10, 'x');
  absl::Status status;
  for (int index = 0; index < 4096 && status.ok(); ++index) {  // at most 256 MiB
    status = writer->SendEvent(event);
    if (index % 16 == 0) std::this_thread::sleep_for(1ms);  // let the strand catch up
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(streams_.cancelled, 1);
}

TEST_F(HttpServerTest, SlowClientsAreDisconnected) {
  HttpServerOptions options;
  options.request_timeout = 300ms;
  options.keep_alive_timeout = 300ms;
  StartServer(options);
  RawClient slow(port_);
  slow.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never finishes its headers
  RawClient idle(port_);
  EXPECT_TRUE(slow.ClosedWithin(2s));
  EXPECT_TRUE(idle.ClosedWithin(2s));
  RawClient client(port_);
  EXPECT_EQ(client.Request(Get("/healthz"))->status, 200);
}

TEST_F(HttpServerTest, ApiKeys) {
  HttpServerOptions options;
  options.api_keys = ApiKeys({"sk-right"});
  StartServer(options);
  RawClient client(port_);
  std::optional<ParsedResponse> response = client.Request(Get("/v1/models"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);
  EXPECT_EQ(response->headers["www-authenticate"], "Bearer");
  EXPECT_EQ(Json::parse(response->body)["error"]["type"], "authentication_error");

  response = client.Request(Get("/v1/models", "Authorization: Bearer sk-wrong\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);

  response = client.Request(Get("/v1/models", "Authorization: Bearer sk-right\r\n"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "models");

  response = client.Request(Get("/healthz"));  // probes never need a key
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

// 500 streams held open at once by a server with 2 I/O threads: no thread per connection.
TEST_F(HttpServerTest, HundredsOfConcurrentStreamsWithoutThreadPerConnection) {
  constexpr int kStreams = 500;
  rlimit limit;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 4 * kStreams) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 4 * kStreams);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  StartServer();
  const int threads_before = ThreadCount();
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int index = 0; index < kStreams; ++index) {
    clients.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(clients.back()->connected()) << index;
    clients.back()->Send(Get("/stream"));
  }
  for (int index = 0; index < kStreams; ++index) {
    ASSERT_TRUE(clients[index]->ReadUntil("data: {\"n\":1}")) << index;
  }
  ASSERT_TRUE(Eventually([&] { return streams_.started == kStreams; }));
  EXPECT_EQ(server_->open_connections(), kStreams);
  EXPECT_EQ(ThreadCount(), threads_before);

  // Every stream still works: one more event each, written from this thread.
  for (int index = 0; index < kStreams; ++index) {
    ASSERT_TRUE(streams_.Get(index)->SendEvent("{\"n\":2}").ok());
  }
  for (int index = 0; index < kStreams; ++index) {
    ASSERT_TRUE(clients[index]->ReadUntil("data: {\"n\":2}")) << index;
  }
  clients.clear();
  EXPECT_TRUE(Eventually([&] { return streams_.cancelled == kStreams; }));
  EXPECT_TRUE(Eventually([&] { return server_->open_connections() == 0; }));
  EXPECT_EQ(ThreadCount(), threads_before);
}

TEST_F(HttpServerTest, GracefulStopFinishesInFlightThenClosesTheRest) {
  StartServer();
  RawClient idle(port_);
  ASSERT_EQ(idle.Request(Get("/healthz"))->status, 200);
  RawClient finishing(port_);
  finishing.Send(Get("/stream"));
  ASSERT_TRUE(finishing.ReadUntil("data: {\"n\":1}"));
  RawClient abandoned(port_);
  abandoned.Send(Get("/stream"));
  ASSERT_TRUE(abandoned.ReadUntil("data: {\"n\":1}"));
  ASSERT_TRUE(Eventually([&] { return streams_.started == 2; }));

  std::thread stopper([&] { server_->Stop(1500ms); });
  EXPECT_TRUE(idle.ClosedWithin(1s));  // idle connections close at once
  std::shared_ptr<HttpResponseWriter> first = streams_.Get(0);
  ASSERT_TRUE(first->FinishEventStream().ok());
  stopper.join();
  EXPECT_TRUE(finishing.ReadUntil("data: [DONE]\n\n\r\n0\r\n\r\n")) << finishing.buffer();
  EXPECT_TRUE(finishing.ClosedWithin(1s));
  EXPECT_TRUE(abandoned.ClosedWithin(1s));
  EXPECT_EQ(streams_.cancelled, 1);
  EXPECT_EQ(streams_.Get(1)->SendEvent("{}").code(), absl::StatusCode::kCancelled);
  RawClient refused(port_);
  EXPECT_FALSE(refused.connected());
}

// TLS on the same code path, with a self-signed certificate made by the openssl CLI.
TEST_F(HttpServerTest, Tls) {
  const std::filesystem::path directory = std::filesystem::path(testing::TempDir()) / "http-tls";
  std::filesystem::create_directories(directory);
  const std::string certificate = (directory / "cert.pem").string();
  const std::string key = (directory / "key.pem").string();
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -keyout " + key +
      " -out " + certificate + " > /dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  HttpServerOptions options;
  options.tls = TlsFiles{certificate, key};
  StartServer(options);

  namespace asio = boost::asio;
  asio::io_context context;
  asio::ssl::context tls(asio::ssl::context::tls_client);
  tls.load_verify_file(certificate);
  asio::ssl::stream<asio::ip::tcp::socket> stream(context, tls);
  stream.set_verify_mode(asio::ssl::verify_peer);
  stream.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port_});
  stream.handshake(asio::ssl::stream_base::client);

  std::string data;
  const auto read_response = [&] {
    char chunk[4096];
    std::optional<ParsedResponse> response;
    while (!(response = TakeResponse(data))) {
      data.append(chunk, stream.read_some(asio::buffer(chunk)));
    }
    return *response;
  };
  const auto request = [&](const std::string& text) {
    asio::write(stream, asio::buffer(text));
    return read_response();
  };
  ParsedResponse response = request(Get("/healthz"));
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "ok");

  asio::write(stream, asio::buffer(Get("/stream")));
  ASSERT_TRUE(Eventually([&] { return streams_.started == 1; }));
  ASSERT_TRUE(streams_.Get(0)->FinishEventStream().ok());
  response = read_response();
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "data: {\"n\":1}\n\ndata: [DONE]\n\n");

  // Plain HTTP to the TLS port fails cleanly; the server keeps serving TLS.
  RawClient plain(port_);
  plain.Send(Get("/healthz"));
  EXPECT_TRUE(plain.ClosedWithin(2s));
  EXPECT_EQ(request(Get("/healthz")).status, 200);
}

}  // namespace
}  // namespace reflect
