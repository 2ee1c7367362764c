// End to end on loopback: real reflect-worker replicas and a real reflect-router (DESIGN §1, §8),
// driven by real clients — the public gRPC API, HTTP/SSE, the official OpenAI Python client,
// a reflection-only gRPC client (what grpcurl does), and over TLS with API keys.
//
// What is checked: 64 concurrent streams over gRPC and over HTTP give exactly what each request
// gives alone; requests sharing a long system prompt hit the prefix cache (usage and replica
// metrics) and reach their first token sooner; cancelling a stream returns every KV block; a full
// queue answers 429 / RESOURCE_EXHAUSTED at once; killing a replica under load ends its requests
// with UNAVAILABLE while the others finish and the router stays ready; with TLS and API keys on,
// both ports refuse plaintext and keyless requests.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "reflect/v1/inference.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/grpc_health.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/prometheus_server.h"
#include "tests/support/serving_cluster.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using testing::HttpCall;
using testing::HttpReply;
using testing::ServingCluster;
using testing::ServingClusterOptions;
using testing::SseData;

// What one public Generate/Chat stream gave.
struct StreamOutcome {
  grpc::Status status;
  std::vector<int32_t> token_ids;
  std::string text;
  v1::Finish finish;
  int chunks = 0;
  absl::Time ended;  // when the stream's status arrived
};

std::unique_ptr<v1::Inference::Stub> InferenceStub(const std::string& address) {
  return v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

StreamOutcome RunChat(v1::Inference::Stub& stub, const v1::ChatRequest& request,
                      std::function<void(grpc::ClientContext&, int)> on_chunk = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  std::unique_ptr<grpc::ClientReader<v1::GenerationChunk>> reader = stub.Chat(&context, request);
  StreamOutcome outcome;
  v1::GenerationChunk chunk;
  while (reader->Read(&chunk)) {
    ++outcome.chunks;
    outcome.token_ids.insert(outcome.token_ids.end(), chunk.token_ids().begin(),
                             chunk.token_ids().end());
    outcome.text += chunk.text();
    if (chunk.has_finish()) outcome.finish = chunk.finish();
    if (on_chunk) on_chunk(context, outcome.chunks);
  }
  outcome.status = reader->Finish();
  outcome.ended = absl::Now();
  return outcome;
}

// Request `index` of a mixed set: greedy and seeded, different lengths and questions.
v1::ChatRequest ChatFor(int index) {
  v1::ChatRequest request;
  v1::ChatMessage& message = *request.add_messages();
  message.set_role(v1::ROLE_USER);
  message.set_content(absl::StrCat("Question number ", index, ": why is the sky blue? ",
                                   std::string(static_cast<size_t>(index % 5) * 9, 'x')));
  request.set_add_reflection_system_prompt(index % 3 != 0);
  v1::SamplingParams& sampling = *request.mutable_sampling();
  sampling.set_temperature(index % 2 == 0 ? 0.0 : 0.9);
  sampling.set_seed(static_cast<uint64_t>(100 + index));
  sampling.set_max_tokens(6 + index % 7);
  sampling.set_ignore_eos(true);
  return request;
}

nlohmann::json HttpChatBody(int index, bool stream) {
  return {{"messages", {{{"role", "user"}, {"content", absl::StrCat("HTTP question ", index)}}}},
          {"max_tokens", 5 + index % 6},
          {"temperature", index % 2 == 0 ? 0.0 : 0.8},
          {"seed", 500 + index},
          {"ignore_eos", true},
          {"stream", stream}};
}

// The text of an SSE chat stream (reasoning and content together) and its finish reason.
std::string StreamedChatText(const HttpReply& reply) {
  std::string text;
  for (const std::string& data : SseData(reply.body)) {
    if (data == "[DONE]") break;
    const nlohmann::json chunk = nlohmann::json::parse(data);
    for (const nlohmann::json& choice : chunk["choices"]) {
      const nlohmann::json& delta = choice["delta"];
      if (delta.contains("reasoning_content") && delta["reasoning_content"].is_string()) {
        text += delta["reasoning_content"].get<std::string>();
      }
      if (delta.contains("content") && delta["content"].is_string()) {
        text += delta["content"].get<std::string>();
      }
    }
  }
  return text;
}

ServingClusterOptions ClusterOptions(int replicas, std::vector<std::string> worker_flags,
                                     std::vector<std::string> router_flags) {
  ServingClusterOptions options;
  options.replicas = replicas;
  options.worker_flags = std::move(worker_flags);
  options.router_flags = std::move(router_flags);
  return options;
}

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new ServingCluster(ClusterOptions(2, {"--max-num-seqs", "64"}, {}));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(cluster_->ready()) << "the cluster did not come up"; }

  static ServingCluster* cluster_;
};

ServingCluster* ServingTest::cluster_ = nullptr;

TEST_F(ServingTest, SixtyFourConcurrentGrpcStreamsEqualTheirAloneRuns) {
  constexpr int kStreams = 64;
  std::unique_ptr<v1::Inference::Stub> stub = InferenceStub(cluster_->grpc_address());
  std::vector<StreamOutcome> alone;
  for (int index = 0; index < kStreams; ++index) alone.push_back(RunChat(*stub, ChatFor(index)));
  std::vector<std::future<StreamOutcome>> together;
  for (int index = 0; index < kStreams; ++index) {
    together.push_back(
        std::async(std::launch::async, [&stub, index] { return RunChat(*stub, ChatFor(index)); }));
  }
  for (int index = 0; index < kStreams; ++index) {
    const StreamOutcome outcome = together[static_cast<size_t>(index)].get();
    const StreamOutcome& reference = alone[static_cast<size_t>(index)];
    ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
    ASSERT_TRUE(outcome.status.ok()) << index << ": " << outcome.status.error_message();
    EXPECT_EQ(outcome.token_ids, reference.token_ids) << "request " << index;
    EXPECT_EQ(outcome.text, reference.text) << "request " << index;
    EXPECT_EQ(outcome.finish.usage().completion_tokens(), ChatFor(index).sampling().max_tokens());
    EXPECT_EQ(outcome.finish.reason(), v1::FINISH_REASON_LENGTH);
  }
}

TEST_F(ServingTest, SixtyFourConcurrentHttpStreamsEqualTheirAloneRuns) {
  constexpr int kStreams = 64;
  auto run = [](int index) {
    return HttpCall(cluster_->http_address(), "POST", "/v1/chat/completions",
                    HttpChatBody(index, true).dump());
  };
  std::vector<std::string> alone;
  for (int index = 0; index < kStreams; ++index) {
    const HttpReply reply = run(index);
    ASSERT_EQ(reply.status, 200) << reply.body;
    ASSERT_EQ(SseData(reply.body).back(), "[DONE]");
    alone.push_back(StreamedChatText(reply));
  }
  std::vector<std::future<HttpReply>> together;
  for (int index = 0; index < kStreams; ++index) {
    together.push_back(std::async(std::launch::async, run, index));
  }
  for (int index = 0; index < kStreams; ++index) {
    const HttpReply reply = together[static_cast<size_t>(index)].get();
    ASSERT_EQ(reply.status, 200) << reply.body;
    EXPECT_EQ(SseData(reply.body).back(), "[DONE]");
    EXPECT_EQ(StreamedChatText(reply), alone[static_cast<size_t>(index)]) << "request " << index;
  }
  // The non-streamed answer is the streamed one.
  const HttpReply whole = HttpCall(cluster_->http_address(), "POST", "/v1/chat/completions",
                                   HttpChatBody(0, false).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const nlohmann::json message = nlohmann::json::parse(whole.body)["choices"][0]["message"];
  std::string text;
  if (message.contains("reasoning_content") && message["reasoning_content"].is_string()) {
    text += message["reasoning_content"].get<std::string>();
  }
  text += message["content"].is_string() ? message["content"].get<std::string>() : "";
  EXPECT_EQ(text, alone[0]);
}

TEST_F(ServingTest, SharedSystemPromptHitsThePrefixCacheAndCutsTimeToFirstToken) {
  std::unique_ptr<v1::Inference::Stub> stub = InferenceStub(cluster_->grpc_address());
  // A long shared system prompt (about 1,500 tokens) so that prefill dominates the first token.
  std::string system_prompt;
  for (int line = 0; line < 150; ++line) {
    absl::StrAppend(&system_prompt, "Rule ", line, ": reason step by step, then reflect. ");
  }
  auto request = [&](int index) {
    v1::ChatRequest chat;
    v1::ChatMessage& system = *chat.add_messages();
    system.set_role(v1::ROLE_SYSTEM);
    system.set_content(system_prompt);
    v1::ChatMessage& user = *chat.add_messages();
    user.set_role(v1::ROLE_USER);
    user.set_content(absl::StrCat("User ", index, " asks something different."));
    chat.mutable_sampling()->set_max_tokens(2);
    chat.mutable_sampling()->set_temperature(0);
    return chat;
  };
  const StreamOutcome miss = RunChat(*stub, request(0));
  ASSERT_TRUE(miss.status.ok()) << miss.status.error_message();
  EXPECT_LT(miss.finish.usage().cached_prompt_tokens(), 16);
  // The router learns what a replica caches from its summary: rebuilt at most every 100 ms and
  // polled every 200 ms (docs/routing.md), so it may be 300 ms behind.
  absl::SleepFor(absl::Milliseconds(600));
  std::vector<double> hit_ttft;
  for (int index = 1; index <= 3; ++index) {
    const StreamOutcome hit = RunChat(*stub, request(index));
    ASSERT_TRUE(hit.status.ok()) << hit.status.error_message();
    // Whole blocks of the shared prompt came from the cache (prefix affinity sent it back to
    // the replica that computed them).
    EXPECT_GT(hit.finish.usage().cached_prompt_tokens(), 1000);
    hit_ttft.push_back(hit.finish.timings().time_to_first_token_seconds());
  }
  std::sort(hit_ttft.begin(), hit_ttft.end());
  EXPECT_LT(hit_ttft[1], miss.finish.timings().time_to_first_token_seconds())
      << "median hit TTFT " << hit_ttft[1] << " s vs miss "
      << miss.finish.timings().time_to_first_token_seconds() << " s";
  // The replicas count the hits.
  double hits = 0;
  for (int replica = 0; replica < 2; ++replica) {
    absl::StatusOr<testing::ParsedMetrics> metrics =
        testing::ScrapeMetrics(cluster_->replica_metrics_address(replica));
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    hits += metrics->Value("reflect_prefix_cache_hits_total").value_or(0.0);
  }
  EXPECT_GT(hits, 3000);
}

TEST_F(ServingTest, CancelMidStreamReturnsEveryKvBlock) {
  std::unique_ptr<v1::Inference::Stub> stub = InferenceStub(cluster_->grpc_address());
  v1::ChatRequest request = ChatFor(1);
  request.mutable_sampling()->set_max_tokens(5000);
  const StreamOutcome outcome = RunChat(*stub, request, [](grpc::ClientContext& context, int n) {
    if (n == 3) context.TryCancel();
  });
  EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::CANCELLED);
  // Within a second every replica reports no sequence and no block in use.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  int64_t used = -1;
  while (absl::Now() < deadline) {
    used = 0;
    for (int replica = 0; replica < 2; ++replica) {
      auto internal_stub = internal::v1::Replica::NewStub(grpc::CreateChannel(
          cluster_->replica_address(replica), grpc::InsecureChannelCredentials()));
      grpc::ClientContext context;
      internal::v1::LoadReport report;
      ASSERT_TRUE(internal_stub->GetLoad(&context, {}, &report).ok());
      used += report.running_requests() +
              static_cast<int64_t>(report.kv_cache_usage_ratio() * 1e6 > 0.5);
    }
    if (used == 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(used, 0);
}

TEST_F(ServingTest, OfficialOpenAiClientStreamsAChatCompletion) {
  const testing::ProcessResult result =
      testing::RunProcess({"/usr/bin/env", "python3",
                           std::string(REFLECT_SOURCE_DIR) + "/tests/python/openai_client_check.py",
                           absl::StrCat("http://", cluster_->http_address(), "/v1"), "tiny"});
  EXPECT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
}

TEST_F(ServingTest, ReflectionClientListsAndCallsTheApiLikeGrpcurl) {
  const testing::ProcessResult result = testing::RunProcess(
      {"/usr/bin/env", "python3",
       std::string(REFLECT_SOURCE_DIR) + "/tests/python/grpc_reflection_check.py",
       cluster_->grpc_address()});
  EXPECT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
  EXPECT_NE(result.standard_output.find("reflect.v1.Inference"), std::string::npos);
}

// A cluster whose replica runs one sequence at a time and whose router queues at most two
// requests: the fourth concurrent request is refused at once.
TEST(ServingAdmissionTest, FullQueueAnswers429AtOnceWithRetryAfter) {
  ServingCluster cluster(
      ClusterOptions(1, {"--max-num-seqs", "1"}, {"--max_queued_requests", "2"}));
  ASSERT_TRUE(cluster.ready());
  std::unique_ptr<v1::Inference::Stub> stub = InferenceStub(cluster.grpc_address());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerationChunk>>> readers;
  // One running (it has its first token), two queued behind it on the replica.
  for (int index = 0; index < 3; ++index) {
    v1::ChatRequest request = ChatFor(index);
    request.mutable_sampling()->set_max_tokens(100000);
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub->Chat(contexts.back().get(), request));
    if (index == 0) {
      v1::GenerationChunk first;
      ASSERT_TRUE(readers.back()->Read(&first));
    }
  }
  absl::SleepFor(absl::Milliseconds(300));  // the two queued requests reach the router's queue
  const absl::Time start = absl::Now();
  const HttpReply rejected = HttpCall(cluster.http_address(), "POST", "/v1/chat/completions",
                                      HttpChatBody(7, true).dump());
  const absl::Duration http_latency = absl::Now() - start;
  EXPECT_EQ(rejected.status, 429) << rejected.body;
  EXPECT_TRUE(rejected.headers.contains("retry-after"));
  EXPECT_LT(http_latency, absl::Milliseconds(50));

  const absl::Time grpc_start = absl::Now();
  const StreamOutcome grpc_rejected = RunChat(*stub, ChatFor(8));
  EXPECT_EQ(grpc_rejected.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_LT(absl::Now() - grpc_start, absl::Milliseconds(50));
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) reader->Finish();
}

// Sends 16 streams over two replicas, hits the replica running the most of them with `signal`
// once every stream has its first chunk (the router may have sent them all to one replica, say
// when a slow poll took the other out of rotation), and checks that the streams on the stricken
// replica end with UNAVAILABLE (within `deadline`; those that finished before the signal end ok),
// every stream on the other replica finishes, and the router stays ready and serves new work on
// the other replica.
void ExpectOnlyTheStrickenReplicasRequestsEnd(int signal, absl::Duration deadline) {
  ServingCluster cluster(ClusterOptions(2, {}, {}));
  ASSERT_TRUE(cluster.ready());
  std::unique_ptr<v1::Inference::Stub> stub = InferenceStub(cluster.grpc_address());
  constexpr int kStreams = 16;
  std::atomic<int> started{0};
  std::vector<std::future<StreamOutcome>> outcomes;
  for (int index = 0; index < kStreams; ++index) {
    outcomes.push_back(std::async(std::launch::async, [&stub, &started, index] {
      v1::ChatRequest request = ChatFor(index);
      request.mutable_sampling()->set_max_tokens(index % 2 == 0 ? 400 : 60);
      return RunChat(*stub, request, [&started](grpc::ClientContext&, int chunk) {
        if (chunk == 1) ++started;
      });
    }));
  }
  const absl::Time start_deadline = absl::Now() + absl::Seconds(60);
  while (started.load() < kStreams && absl::Now() < start_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(started.load(), kStreams);
  double running[2] = {0, 0};
  for (int replica = 0; replica < 2; ++replica) {
    absl::StatusOr<testing::ParsedMetrics> metrics =
        testing::ScrapeMetrics(cluster.replica_metrics_address(replica));
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    running[replica] = metrics->Value("reflect_num_requests_running").value_or(0.0);
  }
  const int busiest = running[1] > running[0] ? 1 : 0;
  ASSERT_GT(running[busiest], 0);
  cluster.replica_process(busiest).Signal(signal);
  const absl::Time stricken = absl::Now();
  int unavailable = 0;
  int ok = 0;
  for (auto& future : outcomes) {
    const StreamOutcome outcome = future.get();
    if (outcome.status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << outcome.status.error_message();
      EXPECT_LT(outcome.ended - stricken, deadline) << outcome.status.error_message();
      ++unavailable;
    }
  }
  EXPECT_GT(unavailable, 0);
  EXPECT_LE(unavailable, running[busiest]);
  EXPECT_GE(ok, running[1 - busiest]);
  EXPECT_EQ(ok + unavailable, kStreams);
  // The router stays up and sends new work to the live replica.
  EXPECT_TRUE(cluster.WaitForReadyz(200, absl::Seconds(5)));
  for (int index = 0; index < 4; ++index) {
    const StreamOutcome after = RunChat(*stub, ChatFor(index));
    EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  }
}

TEST(ServingFailoverTest, KillingAReplicaUnderLoadEndsOnlyItsRequests) {
  ExpectOnlyTheStrickenReplicasRequestsEnd(SIGKILL, absl::Seconds(5));
}

// A stopped process keeps its connections open and answers nothing: keepalive pings find it.
TEST(ServingFailoverTest, AHungReplicasRequestsEndWithinSeconds) {
  ExpectOnlyTheStrickenReplicasRequestsEnd(SIGSTOP, absl::Seconds(10));
}

// The real reflect-router with --tls_cert_file, --tls_key_file and --api_key_file: both public
// ports speak only TLS, and both refuse a request without a valid key and serve one with it.
TEST(ServingSecurityTest, TlsAndApiKeysGuardBothPorts) {
  const std::filesystem::path directory = testing::MakeTestDirectory("serving-security");
  const std::string certificate = (directory / "cert.pem").string();
  const std::string key = (directory / "key.pem").string();
  const std::string keys = (directory / "api-keys").string();
  ASSERT_EQ(testing::RunProcess({"/usr/bin/env", "openssl", "req", "-x509", "-newkey", "rsa:2048",
                                 "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
                                 "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                                 "-out", certificate})
                .exit_code,
            0);
  std::ofstream(keys) << "first-key\nsecond-key\n";

  testing::WorkerProcess worker(testing::TestModelPath("tiny").string());
  ASSERT_FALSE(worker.address().empty());
  testing::ChildProcess router({std::string(REFLECT_BINARY_DIR) + "/router/reflect-router",
                                "--model", testing::TestModelPath("tiny").string(), "--replicas",
                                worker.address(), "--host", "127.0.0.1", "--grpc_port", "0",
                                "--http_port", "0", "--tls_cert_file", certificate,
                                "--tls_key_file", key, "--api_key_file", keys});
  const std::string grpc_address = router.WaitForLine("grpc ", absl::Seconds(60));
  const std::string http_address = router.WaitForLine("http ", absl::Seconds(60));
  ASSERT_FALSE(http_address.empty());

  // gRPC over TLS, trusting only the test certificate.
  grpc::SslCredentialsOptions tls;
  std::ifstream certificate_file(certificate);
  tls.pem_root_certs.assign(std::istreambuf_iterator<char>(certificate_file), {});
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(grpc_address, grpc::SslCredentials(tls));
  std::unique_ptr<v1::Inference::Stub> stub = v1::Inference::NewStub(channel);
  const auto chat_with_key = [&](const std::string& authorization) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    auto reader = stub->Chat(&context, ChatFor(1));
    v1::GenerationChunk chunk;
    int chunks = 0;
    while (reader->Read(&chunk)) ++chunks;
    const grpc::Status status = reader->Finish();
    return std::make_pair(status, chunks);
  };
  // Health (not behind the keys) says SERVING once the replica is in rotation.
  ASSERT_TRUE(testing::WaitForHealth(*channel, "", grpc::health::v1::HealthCheckResponse::SERVING));
  const auto [refused, no_chunks] = chat_with_key("");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << refused.error_message();
  EXPECT_EQ(no_chunks, 0);
  EXPECT_EQ(chat_with_key("Bearer wrong-key").first.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  const auto [served, chunks] = chat_with_key("Bearer second-key");
  EXPECT_TRUE(served.ok()) << served.error_message();
  EXPECT_GT(chunks, 0);

  // A plaintext client gets nothing from either port.
  std::unique_ptr<v1::Inference::Stub> plaintext = InferenceStub(grpc_address);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListModelsResponse models;
  EXPECT_FALSE(plaintext->ListModels(&context, v1::ListModelsRequest(), &models).ok());
  EXPECT_NE(HttpCall(http_address, "GET", "/v1/models").status, 200);

  // HTTPS with Python's ssl module, verifying the certificate: 401 without a key, 200 with one.
  const testing::ProcessResult https =
      testing::RunProcess({"/usr/bin/env", "python3", "-c", R"(
import json, ssl, sys, urllib.error, urllib.request
url, certificate = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile=certificate)
def status(headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=context) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
print(json.dumps([status({}), status({"Authorization": "Bearer first-key"})]))
)",
                           "https://" + http_address + "/v1/models", certificate});
  ASSERT_EQ(https.exit_code, 0) << https.standard_error;
  const nlohmann::json replies = nlohmann::json::parse(https.standard_output);
  EXPECT_EQ(replies[0][0], 401) << replies.dump();
  EXPECT_EQ(replies[0][1]["error"]["type"], "authentication_error") << replies.dump();
  EXPECT_EQ(replies[1][0], 200) << replies.dump();
  EXPECT_EQ(replies[1][1]["data"][0]["id"], "tiny") << replies.dump();
}

}  // namespace
}  // namespace reflect
