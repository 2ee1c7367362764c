// The load tester's gRPC and HTTP clients against a real serving cluster on loopback: many
// concurrent streams on few threads, the measurements each record holds, and the outcomes
// (rejected with a retry hint, timeout, error).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "loadtest/chat_completion_stream.h"
#include "loadtest/grpc_load_client.h"
#include "loadtest/http_load_client.h"
#include "reflect/v1/inference.grpc.pb.h"
#include "tests/support/serving_cluster.h"

namespace reflect::loadtest {
namespace {

constexpr char kUserMessage[] = "Count the letters in the word strawberry.";

enum class Protocol { kGrpc, kHttp };

std::string ProtocolName(Protocol protocol) {
  return protocol == Protocol::kGrpc ? "grpc" : "http";
}

int ThreadCount() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    int threads = 0;
    if (line.rfind("Threads:", 0) == 0 && absl::SimpleAtoi(line.substr(8), &threads)) {
      return threads;
    }
  }
  return -1;
}

PlannedRequest Request(int64_t index, int32_t max_tokens) {
  PlannedRequest request;
  request.index = index;
  request.user_message = kUserMessage;
  request.max_tokens = max_tokens;
  request.seed = static_cast<uint64_t>(index);
  return request;
}

std::unique_ptr<LoadClient> MakeClient(Protocol protocol, const testing::ServingCluster& cluster,
                                       absl::Duration timeout = absl::Minutes(5)) {
  LoadClientOptions options;
  options.address = protocol == Protocol::kGrpc ? cluster.grpc_address() : cluster.http_address();
  options.request_timeout = timeout;
  absl::StatusOr<std::unique_ptr<LoadClient>> client;
  if (protocol == Protocol::kGrpc) {
    client = GrpcLoadClient::Create(options);
  } else {
    client = HttpLoadClient::Create(options);
  }
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

// Sends every request at once and waits for all records (in index order). While they run, the
// process's thread count is sampled; the largest goes to `max_threads` when given.
std::vector<RequestRecord> SendAll(LoadClient& client, const std::vector<PlannedRequest>& requests,
                                   int* max_threads = nullptr) {
  std::mutex mutex;
  std::vector<RequestRecord> records(requests.size());
  std::atomic<int> done_calls{0};
  std::atomic<bool> running{true};
  std::atomic<int> peak_threads{0};
  std::thread sampler([&] {
    while (running.load()) {
      peak_threads.store(std::max(peak_threads.load(), ThreadCount()));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  const absl::Time run_start = absl::Now();
  for (const PlannedRequest& request : requests) {
    client.Send(request, run_start, [&](RequestRecord record) {
      const std::lock_guard lock(mutex);
      const size_t index = static_cast<size_t>(record.index);
      records[index] = std::move(record);
      done_calls.fetch_add(1);
    });
  }
  client.Drain();
  running.store(false);
  sampler.join();
  EXPECT_EQ(done_calls.load(), static_cast<int>(requests.size()));
  if (max_threads != nullptr) *max_threads = peak_threads.load();
  return records;
}

// The prompt length the router's Tokenize reports for kUserMessage with the reflection prompt.
int TokenizedPromptLength(const std::string& grpc_address) {
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials()));
  v1::TokenizeRequest request;
  request.set_add_reflection_system_prompt(true);
  v1::ChatMessage* message = request.mutable_chat()->add_messages();
  message->set_role(v1::ROLE_USER);
  message->set_content(kUserMessage);
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  const grpc::Status status = stub->Tokenize(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.token_ids_size();
}

TEST(TokenClockTest, ChunkOfKTokensIsOneGapAndKMinusOneZeros) {
  const absl::Time sent = absl::FromUnixSeconds(1000);
  TokenClock clock(sent);
  clock.OnTokens(sent + absl::Milliseconds(100), 2, /*output=*/false);
  clock.OnTokens(sent + absl::Milliseconds(130), 0, /*output=*/true);  // text only: no arrival
  clock.OnTokens(sent + absl::Milliseconds(150), 3, /*output=*/true);
  RequestRecord record;
  clock.Fill(sent + absl::Milliseconds(200), record);
  EXPECT_EQ(record.output_tokens, 5);
  EXPECT_EQ(record.time_to_first_token, absl::Milliseconds(100));
  EXPECT_EQ(record.time_to_first_output_token, absl::Milliseconds(150));
  EXPECT_EQ(record.end_to_end, absl::Milliseconds(200));
  EXPECT_EQ(record.inter_token_latencies,
            (std::vector<absl::Duration>{absl::ZeroDuration(), absl::Milliseconds(50),
                                         absl::ZeroDuration(), absl::ZeroDuration()}));
  clock.ReconcileTokenCount(7);  // two more tokens than arrivals: zero gaps
  clock.Fill(sent + absl::Milliseconds(200), record);
  EXPECT_EQ(record.inter_token_latencies.size(), 6u);
  clock.ReconcileTokenCount(2);
  clock.Fill(sent + absl::Milliseconds(200), record);
  EXPECT_EQ(record.inter_token_latencies, std::vector<absl::Duration>{absl::ZeroDuration()});
}

TEST(ChatCompletionStreamTest, EventsSplitAcrossReads) {
  const absl::Time sent = absl::FromUnixSeconds(1000);
  TokenClock clock(sent);
  ChatCompletionStream stream(clock);
  const std::string body =
      "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
      "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"Hm\"}}]}\r\n\r\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"Three\"}}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":70,\"completion_tokens\":4,"
      "\"completion_tokens_details\":{\"thinking_tokens\":1,\"reflection_tokens\":0}}}\n\n"
      "data: [DONE]\n\n";
  for (size_t offset = 0; offset < body.size(); offset += 7) {
    stream.Feed(std::string_view(body).substr(offset, 7), sent + absl::Milliseconds(offset));
  }
  EXPECT_TRUE(stream.done());
  EXPECT_FALSE(stream.error().has_value());
  ASSERT_TRUE(stream.usage().has_value());
  EXPECT_EQ(stream.usage()->prompt_tokens, 70);
  EXPECT_EQ(stream.usage()->completion_tokens, 4);
  EXPECT_EQ(stream.usage()->thinking_tokens, 1);
  EXPECT_EQ(clock.tokens(), 2);  // the role chunk has no text
}

TEST(ChatCompletionStreamTest, ErrorEvent) {
  TokenClock clock(absl::Now());
  ChatCompletionStream stream(clock);
  stream.Feed("data: {\"error\":{\"message\":\"replica lost\"}}\n\n", absl::Now());
  EXPECT_EQ(stream.error(), "replica lost");
}

class LoadClientsTest : public ::testing::TestWithParam<Protocol> {
 protected:
  static void SetUpTestSuite() {
    testing::ServingClusterOptions options;
    options.worker_flags = {"--max_num_seqs", "256", "--num_kv_blocks", "4096"};
    cluster_ = new testing::ServingCluster(options);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(cluster_->ready()); }

  static testing::ServingCluster* cluster_;
};

testing::ServingCluster* LoadClientsTest::cluster_ = nullptr;

TEST_P(LoadClientsTest, ManyConcurrentStreamsOnFewThreads) {
  constexpr int kRequests = 200;
  constexpr int32_t kMaxTokens = 24;
  std::unique_ptr<LoadClient> client = MakeClient(GetParam(), *cluster_);
  ASSERT_NE(client, nullptr);
  std::vector<PlannedRequest> requests;
  for (int index = 0; index < kRequests; ++index) requests.push_back(Request(index, kMaxTokens));
  int max_threads = 0;
  const std::vector<RequestRecord> records = SendAll(*client, requests, &max_threads);
  RecordProperty("peak_threads", max_threads);
  EXPECT_LT(max_threads, 64);

  const int prompt_tokens = TokenizedPromptLength(cluster_->grpc_address());
  EXPECT_GT(prompt_tokens, 50);  // the reflection system prompt alone is longer
  for (const RequestRecord& record : records) {
    SCOPED_TRACE(absl::StrCat("request ", record.index));
    ASSERT_EQ(record.outcome, RequestOutcome::kOk) << record.error;
    EXPECT_EQ(record.output_tokens, kMaxTokens);
    EXPECT_EQ(record.inter_token_latencies.size(), static_cast<size_t>(kMaxTokens - 1));
    ASSERT_TRUE(record.time_to_first_token.has_value());
    ASSERT_TRUE(record.end_to_end.has_value());
    EXPECT_GT(*record.time_to_first_token, absl::ZeroDuration());
    EXPECT_LE(*record.time_to_first_token, *record.end_to_end);
    if (record.time_to_first_output_token.has_value()) {
      EXPECT_GE(*record.time_to_first_output_token, *record.time_to_first_token);
    }
    EXPECT_GE(record.sent, absl::ZeroDuration());
    EXPECT_EQ(record.prompt_tokens, prompt_tokens);
    EXPECT_LE(record.thinking_tokens + record.reflection_tokens, record.output_tokens);
    for (const absl::Duration gap : record.inter_token_latencies) {
      EXPECT_GE(gap, absl::ZeroDuration());
    }
  }
}

TEST_P(LoadClientsTest, DeadlineShorterThanTheRequestTimesOut) {
  std::unique_ptr<LoadClient> client =
      MakeClient(GetParam(), *cluster_, /*timeout=*/absl::Milliseconds(300));
  ASSERT_NE(client, nullptr);
  const std::vector<RequestRecord> records = SendAll(*client, {Request(0, 20000)});
  EXPECT_EQ(records[0].outcome, RequestOutcome::kTimeout) << records[0].error;
  ASSERT_TRUE(records[0].end_to_end.has_value());
  EXPECT_GE(*records[0].end_to_end, absl::Milliseconds(250));
  EXPECT_LT(*records[0].end_to_end, absl::Seconds(10));
}

TEST_P(LoadClientsTest, DestroyingTheClientCancelsWhatIsInFlight) {
  std::unique_ptr<LoadClient> client = MakeClient(GetParam(), *cluster_);
  ASSERT_NE(client, nullptr);
  std::atomic<int> cancelled{0};
  for (int index = 0; index < 5; ++index) {
    client->Send(Request(index, 20000), absl::Now(), [&](RequestRecord record) {
      if (record.outcome == RequestOutcome::kError) cancelled.fetch_add(1);
    });
  }
  absl::SleepFor(absl::Milliseconds(200));
  client.reset();  // returns once every `done` has run
  EXPECT_EQ(cancelled.load(), 5);
}

TEST_P(LoadClientsTest, UnreachableAddressIsAnError) {
  LoadClientOptions options;
  options.address = "127.0.0.1:1";  // nothing listens on port 1
  options.request_timeout = absl::Seconds(20);
  absl::StatusOr<std::unique_ptr<LoadClient>> client;
  if (GetParam() == Protocol::kGrpc) {
    client = GrpcLoadClient::Create(options);
  } else {
    client = HttpLoadClient::Create(options);
  }
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<RequestRecord> records = SendAll(**client, {Request(0, 8)});
  EXPECT_EQ(records[0].outcome, RequestOutcome::kError);
  EXPECT_FALSE(records[0].error.empty());
  EXPECT_FALSE(records[0].time_to_first_token.has_value());
}

INSTANTIATE_TEST_SUITE_P(Protocols, LoadClientsTest,
                         ::testing::Values(Protocol::kGrpc, Protocol::kHttp),
                         [](const ::testing::TestParamInfo<Protocol>& info) {
                           return ProtocolName(info.param);
                         });

TEST(LoadClientsAgreementTest, SameGreedyRequestSameCountsOverBothProtocols) {
  testing::ServingClusterOptions options;
  testing::ServingCluster cluster(options);
  ASSERT_TRUE(cluster.ready());
  PlannedRequest request = Request(0, 48);
  request.temperature = 0.0;
  std::vector<RequestRecord> results;
  for (const Protocol protocol : {Protocol::kGrpc, Protocol::kHttp}) {
    std::unique_ptr<LoadClient> client = MakeClient(protocol, cluster);
    ASSERT_NE(client, nullptr);
    results.push_back(SendAll(*client, {request})[0]);
    ASSERT_EQ(results.back().outcome, RequestOutcome::kOk) << results.back().error;
  }
  EXPECT_EQ(results[0].output_tokens, 48);
  EXPECT_EQ(results[0].output_tokens, results[1].output_tokens);
  EXPECT_EQ(results[0].prompt_tokens, results[1].prompt_tokens);
  EXPECT_EQ(results[0].thinking_tokens, results[1].thinking_tokens);
  EXPECT_EQ(results[0].reflection_tokens, results[1].reflection_tokens);
  EXPECT_EQ(results[0].time_to_first_output_token.has_value(),
            results[1].time_to_first_output_token.has_value());
}

TEST(LoadClientsAdmissionTest, OverloadIsRejectedFastWithARetryHint) {
  testing::ServingClusterOptions options;
  options.router_flags = {"--max_queued_requests", "1", "--max_in_flight_requests", "2"};
  testing::ServingCluster cluster(options);
  ASSERT_TRUE(cluster.ready());
  for (const Protocol protocol : {Protocol::kGrpc, Protocol::kHttp}) {
    SCOPED_TRACE(ProtocolName(protocol));
    std::unique_ptr<LoadClient> client = MakeClient(protocol, cluster);
    ASSERT_NE(client, nullptr);
    std::vector<PlannedRequest> requests;
    for (int index = 0; index < 40; ++index) requests.push_back(Request(index, 256));
    const std::vector<RequestRecord> records = SendAll(*client, requests);
    int ok = 0;
    std::vector<absl::Duration> rejection_latencies;
    for (const RequestRecord& record : records) {
      SCOPED_TRACE(absl::StrCat("request ", record.index));
      if (record.outcome == RequestOutcome::kOk) {
        ++ok;
        continue;
      }
      ASSERT_EQ(record.outcome, RequestOutcome::kRejected) << record.error;
      ASSERT_TRUE(record.retry_after.has_value());
      EXPECT_GT(*record.retry_after, absl::ZeroDuration());
      ASSERT_TRUE(record.end_to_end.has_value());
      EXPECT_FALSE(record.time_to_first_token.has_value());
      rejection_latencies.push_back(*record.end_to_end);
    }
    EXPECT_GE(ok, 1);
    ASSERT_GE(rejection_latencies.size(), 20u);
    std::sort(rejection_latencies.begin(), rejection_latencies.end());
    // On a busy 2-core machine: every rejection within 1 s, the median within 50 ms.
    EXPECT_LT(rejection_latencies.back(), absl::Seconds(1));
    EXPECT_LT(rejection_latencies[rejection_latencies.size() / 2], absl::Milliseconds(50));
  }
}

}  // namespace
}  // namespace reflect::loadtest
