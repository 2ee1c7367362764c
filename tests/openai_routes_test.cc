// The OpenAI-compatible routes end to end: a real reflect-worker process on the tiny model, the
// real RequestRouter in-process, the routes on a real HttpServer (port 0), and a plain HTTP
// client. Covers /v1/models, chat and text completions (non-streaming and SSE, identical text),
// stream_options.include_usage, n > 1 and batched prompts merged with choice indices, logprobs,
// errors (400 naming the field, 404 model), API keys, /healthz and /readyz, and a client that
// disconnects mid-stream cancelling its requests.
#include "router/openai_routes.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/chat_template.h"
#include "nlohmann/json.hpp"
#include "tests/support/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/router_over_worker.h"

namespace reflect {
namespace {

using Json = nlohmann::json;
using testing::HttpCall;
using testing::HttpReply;
using testing::SseData;

constexpr absl::Duration kTimeout = absl::Seconds(60);
constexpr int64_t kContextLength = 4096;
constexpr char kApiKey[] = "http-test-key";

std::unique_ptr<HttpServer> Serve(RequestRouter& router, const Tokenizer& tokenizer, ApiKeys keys) {
  HttpServerOptions server_options;
  server_options.address = "127.0.0.1";
  server_options.port = 0;
  server_options.io_threads = 2;
  server_options.api_keys = std::move(keys);
  auto server = std::make_unique<HttpServer>(std::move(server_options));
  OpenAiRoutesOptions options;
  options.limits.served_model_names = {"tiny"};
  options.limits.context_length_tokens = kContextLength;
  options.limits.vocab_size = tokenizer.vocab_size();
  options.created_unix_seconds = 1700000000;
  RegisterOpenAiRoutes(*server, router, tokenizer, options, nullptr);
  RegisterHealthRoutes(*server, router);
  const absl::Status started = server->Start();
  EXPECT_TRUE(started.ok()) << started;
  return server;
}

class OpenAiRoutesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<testing::RouterOverWorker>> started =
        testing::StartRouterOverWorker();
    ASSERT_TRUE(started.ok()) << started.status();
    started_ = started->release();
    tokenizer_ = started_->tokenizer.get();
    router_ = started_->router.get();
    server_ = Serve(*router_, *tokenizer_, ApiKeys()).release();
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) server_->Stop(std::chrono::milliseconds(0));
    delete server_;
    delete started_;
  }

  static std::string Address() { return absl::StrCat("127.0.0.1:", server_->port()); }

  static HttpReply Post(const std::string& path, const Json& body) {
    return HttpCall(Address(), "POST", path, body.dump(), {"Content-Type: application/json"});
  }

  // The JSON events of an SSE body; checks that it ends with [DONE].
  static std::vector<Json> Events(const HttpReply& reply) {
    EXPECT_EQ(reply.status, 200) << reply.body;
    EXPECT_EQ(reply.headers.count("content-type") ? reply.headers.at("content-type") : "",
              "text/event-stream");
    std::vector<std::string> data = SseData(reply.body);
    EXPECT_FALSE(data.empty());
    if (data.empty()) return {};
    EXPECT_EQ(data.back(), "[DONE]");
    std::vector<Json> events;
    for (size_t index = 0; index + 1 < data.size(); ++index) {
      events.push_back(Json::parse(data[index]));
    }
    return events;
  }

  static bool WaitForIdleRouter() {
    const absl::Time deadline = absl::Now() + kTimeout;
    while (absl::Now() < deadline) {
      const RouterLoad load = router_->Load();
      if (load.queued_requests == 0 && load.running_requests == 0) return true;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  static Json ChatBody(int max_tokens) {
    return Json{{"model", "tiny"},
                {"messages", Json::array({{{"role", "user"}, {"content", "What is 2 + 2?"}}})},
                {"max_tokens", max_tokens},
                {"temperature", 0}};
  }

  static inline testing::RouterOverWorker* started_ = nullptr;
  // Views into started_.
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline RequestRouter* router_ = nullptr;
  static inline HttpServer* server_ = nullptr;
};

void ExpectUsageAddsUp(const Json& usage) {
  const Json& details = usage.at("completion_tokens_details");
  EXPECT_EQ(details.at("thinking_tokens").get<int64_t>() +
                details.at("reflection_tokens").get<int64_t>() +
                details.at("output_tokens").get<int64_t>(),
            usage.at("completion_tokens").get<int64_t>());
  EXPECT_EQ(
      usage.at("total_tokens").get<int64_t>(),
      usage.at("prompt_tokens").get<int64_t>() + usage.at("completion_tokens").get<int64_t>());
}

TEST_F(OpenAiRoutesTest, ModelsListsTheServedName) {
  const HttpReply reply = HttpCall(Address(), "GET", "/v1/models");
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json body = Json::parse(reply.body);
  ASSERT_EQ(body.at("data").size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], "tiny");
  EXPECT_EQ(body["data"][0]["max_model_len"], kContextLength);
  EXPECT_EQ(body["data"][0]["created"], 1700000000);
}

TEST_F(OpenAiRoutesTest, HealthAndReadiness) {
  EXPECT_EQ(HttpCall(Address(), "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpCall(Address(), "GET", "/readyz").status, 200);
}

TEST_F(OpenAiRoutesTest, ChatStreamAndNonStreamGiveTheSameAnswer) {
  const HttpReply whole = Post("/v1/chat/completions", ChatBody(16));
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json response = Json::parse(whole.body);
  EXPECT_EQ(response["object"], "chat.completion");
  EXPECT_TRUE(response["id"].get<std::string>().starts_with("chatcmpl-"));
  ASSERT_EQ(response["choices"].size(), 1u);
  const Json& choice = response["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_TRUE(choice["logprobs"].is_null());
  const std::string finish_reason = choice["finish_reason"];
  EXPECT_TRUE(finish_reason == "length" || finish_reason == "stop") << finish_reason;
  const Json& usage = response["usage"];
  ExpectUsageAddsUp(usage);
  EXPECT_EQ(usage["prompt_tokens"].get<size_t>(),
            tokenizer_->Encode(RenderLlama31Chat({{"user", "What is 2 + 2?"}}, true)).size());
  if (finish_reason == "length") {
    EXPECT_EQ(usage["completion_tokens"], 16);
  }

  Json stream_body = ChatBody(16);
  stream_body["stream"] = true;
  stream_body["stream_options"] = {{"include_usage", true}};
  const std::vector<Json> events = Events(Post("/v1/chat/completions", stream_body));
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  std::string reasoning;
  int finish_chunks = 0;
  for (size_t index = 0; index + 1 < events.size(); ++index) {
    const Json& event = events[index];
    EXPECT_EQ(event["object"], "chat.completion.chunk");
    EXPECT_TRUE(event.contains("usage") && event["usage"].is_null());
    const Json& delta = event["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (delta.contains("reasoning_content")) {
      reasoning += delta["reasoning_content"].get<std::string>();
    }
    if (!event["choices"][0]["finish_reason"].is_null()) {
      ++finish_chunks;
      EXPECT_EQ(event["choices"][0]["finish_reason"], finish_reason);
    }
  }
  EXPECT_EQ(finish_chunks, 1);
  EXPECT_EQ(content, choice["message"]["content"]);
  EXPECT_EQ(reasoning, choice["message"].value("reasoning_content", std::string()));
  const Json& usage_event = events.back();
  EXPECT_TRUE(usage_event["choices"].empty());
  // Equal but for prefix-cache hits: the second run finds the first one's prompt cached.
  Json streamed_usage = usage_event["usage"];
  Json whole_usage = usage;
  EXPECT_GT(streamed_usage["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), 0);
  streamed_usage.erase("prompt_tokens_details");
  whole_usage.erase("prompt_tokens_details");
  EXPECT_EQ(streamed_usage, whole_usage);
}

// vLLM's stream_options.continuous_usage_stats (what guidellm sends): every chunk carries the
// usage so far, completion tokens never decreasing, ending at the final usage chunk's count.
TEST_F(OpenAiRoutesTest, ContinuousUsageStatsCountTokensSoFar) {
  Json body = ChatBody(16);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}, {"continuous_usage_stats", true}};
  body["ignore_eos"] = true;
  const std::vector<Json> events = Events(Post("/v1/chat/completions", body));
  ASSERT_GE(events.size(), 3u);
  const Json& final_usage = events.back()["usage"];
  int64_t previous = 0;
  for (size_t index = 0; index + 1 < events.size(); ++index) {
    const Json& usage = events[index]["usage"];
    ASSERT_TRUE(usage.is_object()) << events[index];
    EXPECT_EQ(usage["prompt_tokens"], final_usage["prompt_tokens"]);
    const int64_t completion = usage["completion_tokens"].get<int64_t>();
    EXPECT_GE(completion, previous);
    EXPECT_EQ(usage["total_tokens"].get<int64_t>(),
              usage["prompt_tokens"].get<int64_t>() + completion);
    previous = completion;
  }
  EXPECT_EQ(previous, 16);
  EXPECT_EQ(final_usage["completion_tokens"], 16);
}

TEST_F(OpenAiRoutesTest, ChatEqualsCompletionOfTheRenderedPrompt) {
  const HttpReply chat = Post("/v1/chat/completions", ChatBody(12));
  ASSERT_EQ(chat.status, 200) << chat.body;
  const Json chat_response = Json::parse(chat.body);
  const std::string rendered = RenderLlama31Chat({{"user", "What is 2 + 2?"}}, true);
  // The same prompt as token ids, full trace mode (as chat) so both strip tags alike.
  const HttpReply completion =
      Post("/v1/completions", Json{{"prompt", tokenizer_->Encode(rendered)},
                                   {"max_tokens", 12},
                                   {"temperature", 0},
                                   {"trace_mode", "output_only"}});
  ASSERT_EQ(completion.status, 200) << completion.body;
  const Json completion_response = Json::parse(completion.body);
  EXPECT_EQ(completion_response["object"], "text_completion");
  EXPECT_EQ(completion_response["choices"][0]["text"],
            chat_response["choices"][0]["message"]["content"]);
  EXPECT_EQ(completion_response["usage"]["completion_tokens"],
            chat_response["usage"]["completion_tokens"]);
}

TEST_F(OpenAiRoutesTest, SeveralChoicesAreMergedWithTheirIndices) {
  Json body = ChatBody(8);
  body["n"] = 2;
  body["temperature"] = 1.0;
  body["seed"] = 1234;
  const HttpReply reply = Post("/v1/chat/completions", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json response = Json::parse(reply.body);
  ASSERT_EQ(response["choices"].size(), 2u);
  int64_t completion_tokens = 0;
  for (int index = 0; index < 2; ++index) {
    EXPECT_EQ(response["choices"][index]["index"], index);
    EXPECT_FALSE(response["choices"][index]["finish_reason"].is_null());
  }
  completion_tokens = response["usage"]["completion_tokens"];
  EXPECT_LE(completion_tokens, 16);
  ExpectUsageAddsUp(response["usage"]);

  // The same request replays exactly, streamed: each index gets its text and one finish.
  body["stream"] = true;
  const std::vector<Json> events = Events(Post("/v1/chat/completions", body));
  std::map<int, std::string> content;
  std::map<int, int> finishes;
  for (const Json& event : events) {
    const Json& choice = event["choices"][0];
    const int index = choice["index"];
    if (choice["delta"].contains("content")) {
      content[index] += choice["delta"]["content"].get<std::string>();
    }
    if (!choice["finish_reason"].is_null()) ++finishes[index];
  }
  EXPECT_EQ(finishes, (std::map<int, int>{{0, 1}, {1, 1}}));
  for (int index = 0; index < 2; ++index) {
    EXPECT_EQ(content[index], response["choices"][index]["message"]["content"]);
  }
}

TEST_F(OpenAiRoutesTest, BatchedPromptsGiveOneChoicePerPromptAndSample) {
  const Json body = {{"prompt", Json::array({"Hello there", "The sky is"})},
                     {"n", 2},
                     {"max_tokens", 6},
                     {"temperature", 0}};
  const HttpReply reply = Post("/v1/completions", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const Json response = Json::parse(reply.body);
  ASSERT_EQ(response["choices"].size(), 4u);
  for (int index = 0; index < 4; ++index) EXPECT_EQ(response["choices"][index]["index"], index);
  // Greedy: both samples of a prompt agree, and equal that prompt alone.
  EXPECT_EQ(response["choices"][0]["text"], response["choices"][1]["text"]);
  EXPECT_EQ(response["choices"][2]["text"], response["choices"][3]["text"]);
  const HttpReply alone = Post(
      "/v1/completions", Json{{"prompt", "The sky is"}, {"max_tokens", 6}, {"temperature", 0}});
  ASSERT_EQ(alone.status, 200) << alone.body;
  EXPECT_EQ(Json::parse(alone.body)["choices"][0]["text"], response["choices"][2]["text"]);
  // Prompt tokens are counted once per prompt.
  EXPECT_EQ(response["usage"]["prompt_tokens"].get<size_t>(),
            tokenizer_->Encode("Hello there").size() + tokenizer_->Encode("The sky is").size());
  ExpectUsageAddsUp(response["usage"]);
}

TEST_F(OpenAiRoutesTest, Logprobs) {
  Json body = ChatBody(5);
  body["logprobs"] = true;
  HttpReply reply = Post("/v1/chat/completions", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  Json response = Json::parse(reply.body);
  const Json& content = response["choices"][0]["logprobs"]["content"];
  EXPECT_EQ(content.size(), response["usage"]["completion_tokens"].get<size_t>());
  for (const Json& token : content) {
    EXPECT_LE(token["logprob"].get<double>(), 0.0);
    EXPECT_TRUE(token["top_logprobs"].empty());
  }

  body["top_logprobs"] = 3;
  reply = Post("/v1/chat/completions", body);
  ASSERT_EQ(reply.status, 200) << reply.body;
  response = Json::parse(reply.body);
  const Json& with_top = response["choices"][0]["logprobs"]["content"];
  EXPECT_EQ(with_top.size(), response["usage"]["completion_tokens"].get<size_t>());
  for (const Json& token : with_top) {
    const Json& top = token["top_logprobs"];
    ASSERT_EQ(top.size(), 3u) << token.dump();
    // Greedy: the most likely alternative is the chosen token, with its logprob.
    EXPECT_EQ(top[0]["token"], token["token"]);
    EXPECT_EQ(top[0]["bytes"], token["bytes"]);
    EXPECT_DOUBLE_EQ(top[0]["logprob"].get<double>(), token["logprob"].get<double>());
    for (size_t rank = 0; rank < top.size(); ++rank) {
      ASSERT_TRUE(top[rank]["token"].is_string());
      ASSERT_TRUE(top[rank]["bytes"].is_array());
      EXPECT_LE(top[rank]["logprob"].get<double>(), 0.0);
      if (rank > 0) {
        EXPECT_GE(top[rank - 1]["logprob"].get<double>(), top[rank]["logprob"].get<double>());
      }
    }
  }

  reply = Post("/v1/completions",
               Json{{"prompt", "Hello"}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 2}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  response = Json::parse(reply.body);
  const Json& logprobs = response["choices"][0]["logprobs"];
  EXPECT_EQ(logprobs["tokens"].size(), response["usage"]["completion_tokens"].get<size_t>());
  EXPECT_EQ(logprobs["token_logprobs"].size(), logprobs["tokens"].size());
  EXPECT_EQ(logprobs["text_offset"][0], 0);
  // One {token text: logprob} object per token with the 2 alternatives; greedy chose the most
  // likely, so the largest value is the token's own logprob.
  ASSERT_EQ(logprobs["top_logprobs"].size(), logprobs["tokens"].size());
  for (size_t index = 0; index < logprobs["tokens"].size(); ++index) {
    const Json& top = logprobs["top_logprobs"][index];
    ASSERT_TRUE(top.is_object());
    ASSERT_EQ(top.size(), 2u) << top.dump();
    const double own = logprobs["token_logprobs"][index].get<double>();
    ASSERT_TRUE(top.contains(logprobs["tokens"][index].get<std::string>())) << top.dump();
    EXPECT_DOUBLE_EQ(top[logprobs["tokens"][index].get<std::string>()].get<double>(), own);
    for (const auto& [text, value] : top.items()) EXPECT_LE(value.get<double>(), own) << text;
  }
}

TEST_F(OpenAiRoutesTest, ErrorsNameTheField) {
  Json body = ChatBody(4);
  body["temperature"] = -1;
  HttpReply reply = Post("/v1/chat/completions", body);
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(Json::parse(reply.body)["error"]["param"], "temperature");

  body = ChatBody(4);
  body["model"] = "gpt-4o";
  reply = Post("/v1/chat/completions", body);
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(Json::parse(reply.body)["error"]["param"], "model");

  body = ChatBody(kContextLength);
  reply = Post("/v1/chat/completions", body);
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(Json::parse(reply.body)["error"]["param"], "max_tokens");

  reply = Post("/v1/completions", Json{{"prompt", Json::array({1, 2, 99999999})}});
  EXPECT_EQ(reply.status, 400) << reply.body;

  reply = HttpCall(Address(), "POST", "/v1/completions", "{not json");
  EXPECT_EQ(reply.status, 400);
  EXPECT_EQ(Json::parse(reply.body)["error"]["param"], "body");
}

TEST_F(OpenAiRoutesTest, ApiKeyIsRequiredWhenConfigured) {
  std::unique_ptr<HttpServer> secured = Serve(*router_, *tokenizer_, ApiKeys({kApiKey}));
  const std::string address = absl::StrCat("127.0.0.1:", secured->port());
  EXPECT_EQ(HttpCall(address, "GET", "/v1/models").status, 401);
  EXPECT_EQ(HttpCall(address, "GET", "/v1/models", "", {"Authorization: Bearer nope"}).status, 401);
  EXPECT_EQ(
      HttpCall(address, "GET", "/v1/models", "", {absl::StrCat("Authorization: Bearer ", kApiKey)})
          .status,
      200);
  EXPECT_EQ(HttpCall(address, "POST", "/v1/chat/completions", ChatBody(2).dump()).status, 401);
  EXPECT_EQ(HttpCall(address, "POST", "/v1/chat/completions", ChatBody(2).dump(),
                     {absl::StrCat("Authorization: Bearer ", kApiKey)})
                .status,
            200);
  EXPECT_EQ(HttpCall(address, "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpCall(address, "GET", "/readyz").status, 200);
  secured->Stop(std::chrono::milliseconds(0));
}

// A client that reads the start of a stream and hangs up.
TEST_F(OpenAiRoutesTest, DisconnectMidStreamCancelsEveryChoice) {
  const Json body = {{"prompt", "Count forever:"},
                     {"n", 2},
                     {"max_tokens", 3000},
                     {"ignore_eos", true},
                     {"stream", true}};
  const std::string payload = body.dump();
  const std::string request = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
      "Content-Length: ",
      payload.size(), "\r\n\r\n", payload);
  const int socket_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(socket_fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(server_->port());
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(connect(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(send(socket_fd, request.data(), request.size(), 0),
            static_cast<ssize_t>(request.size()));
  // Read until a few events have arrived: both choices are running.
  std::string received;
  char buffer[4096];
  const absl::Time deadline = absl::Now() + kTimeout;
  while (absl::Now() < deadline && std::count(received.begin(), received.end(), '\n') < 12) {
    const ssize_t count = recv(socket_fd, buffer, sizeof(buffer), 0);
    if (count <= 0) break;
    received.append(buffer, static_cast<size_t>(count));
  }
  EXPECT_NE(received.find("data: "), std::string::npos) << received;
  EXPECT_GT(router_->Load().running_requests, 0);
  close(socket_fd);
  EXPECT_TRUE(WaitForIdleRouter());
}

}  // namespace
}  // namespace reflect
