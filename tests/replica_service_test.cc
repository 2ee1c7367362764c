// The real reflect-worker process on the tiny test model, driven with real gRPC clients:
// health goes SERVING after the weights load; 16 concurrent Generate streams give exactly the
// tokens each gives alone; a cancelled stream frees its KV blocks (GetLoad); GetLoad's prefix-cache
// summary holds a finished prompt's blocks; ForceTokens rewinds; SIGTERM mid-stream lets the
// stream finish, refuses new work, and exits 0.
//
// The worker is started with --port 0 and prints "listening <host>:<port>" on stdout, so tests
// running at once never race for a port.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/block_hash.h"
#include "common/prefix_summary.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/grpc_health.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

namespace v1 = internal::v1;
using grpc::health::v1::HealthCheckResponse;

constexpr absl::Duration kTimeout = absl::Seconds(60);

using testing::WorkerProcess;

constexpr char kReplicaService[] = "reflect.internal.v1.Replica";

std::shared_ptr<grpc::Channel> Connect(const WorkerProcess& worker) {
  return grpc::CreateChannel(worker.address(), grpc::InsecureChannelCredentials());
}

v1::StartGeneration Start(int index, int max_tokens) {
  v1::StartGeneration start;
  start.set_request_id("request-" + std::to_string(index));
  for (int position = 0; position < 8 + 11 * index % 60; ++position) {
    start.add_prompt_token_ids((index * 1009 + position * 7919) % 120000);
  }
  v1::SamplingParams& sampling = *start.mutable_sampling();
  sampling.set_temperature(index % 2 == 0 ? 0.0 : 0.8);
  sampling.set_top_p(0.95);
  sampling.set_repetition_penalty(1.0);
  sampling.set_seed(1000 + index);
  sampling.set_max_tokens(max_tokens);
  sampling.set_ignore_eos(true);
  sampling.set_logprobs(1);
  return start;
}

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::vector<int32_t> tokens;  // as the router would assemble them (a rewind replaces the tail)
  std::vector<float> logprobs;
  std::vector<std::vector<int32_t>> top_ids;  // the alternatives of each token, best first
  std::vector<std::vector<float>> top_logprobs;
};

void Assemble(const v1::GenerateResponse& message, StreamResult& result) {
  if (message.token_ids().empty()) return;  // the finish alone
  result.tokens.resize(message.first_index());
  result.logprobs.resize(message.first_index());
  result.tokens.insert(result.tokens.end(), message.token_ids().begin(), message.token_ids().end());
  result.logprobs.insert(result.logprobs.end(), message.logprobs().begin(),
                         message.logprobs().end());
  EXPECT_EQ(message.top_logprobs_size(), message.token_ids_size());
  result.top_ids.resize(message.first_index());
  result.top_logprobs.resize(message.first_index());
  for (const v1::TopLogprobs& top : message.top_logprobs()) {
    EXPECT_EQ(top.token_ids_size(), top.logprobs_size());
    result.top_ids.emplace_back(top.token_ids().begin(), top.token_ids().end());
    result.top_logprobs.emplace_back(top.logprobs().begin(), top.logprobs().end());
  }
}

// Runs one stream to its end. `on_message` may act on the stream after each message.
StreamResult Generate(
    grpc::Channel& channel, const v1::StartGeneration& start,
    const std::function<void(grpc::ClientContext&,
                             grpc::ClientReaderWriter<v1::GenerateRequest, v1::GenerateResponse>&,
                             const StreamResult&)>& on_message = nullptr) {
  auto stub = v1::Replica::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = stub->Generate(&context);
  v1::GenerateRequest request;
  *request.mutable_start() = start;
  StreamResult result;
  if (stream->Write(request)) {
    v1::GenerateResponse response;
    while (stream->Read(&response)) {
      result.messages.push_back(response);
      Assemble(response, result);
      if (on_message) on_message(context, *stream, result);
    }
  }
  result.status = stream->Finish();
  return result;
}

v1::LoadReport GetLoad(grpc::Channel& channel) {
  auto stub = v1::Replica::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  v1::LoadReport report;
  EXPECT_TRUE(stub->GetLoad(&context, v1::GetLoadRequest(), &report).ok());
  return report;
}

class ReplicaServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(worker_.address().empty()) << "reflect-worker did not report its port";
    channel_ = Connect(worker_);
    ASSERT_TRUE(testing::WaitForHealth(*channel_, kReplicaService, HealthCheckResponse::SERVING));
  }

  WorkerProcess worker_{testing::TestModelPath("tiny").string()};
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ReplicaServiceTest, ConcurrentStreamsGiveTheTokensOfAloneRuns) {
  constexpr int kStreams = 16;
  std::vector<v1::StartGeneration> starts;
  for (int index = 0; index < kStreams; ++index) starts.push_back(Start(index, 6 + index % 7));
  std::vector<StreamResult> alone;
  for (const v1::StartGeneration& start : starts) alone.push_back(Generate(*channel_, start));

  std::vector<StreamResult> together(kStreams);
  std::vector<std::thread> threads;
  for (int index = 0; index < kStreams; ++index) {
    threads.emplace_back([&, index] { together[index] = Generate(*channel_, starts[index]); });
  }
  for (std::thread& thread : threads) thread.join();

  for (int index = 0; index < kStreams; ++index) {
    ASSERT_TRUE(alone[index].status.ok()) << alone[index].status.error_message();
    ASSERT_TRUE(together[index].status.ok()) << together[index].status.error_message();
    EXPECT_EQ(together[index].tokens.size(), static_cast<size_t>(6 + index % 7));
    EXPECT_EQ(together[index].tokens, alone[index].tokens) << "stream " << index;
    EXPECT_EQ(together[index].logprobs, alone[index].logprobs) << "stream " << index;
    EXPECT_EQ(together[index].top_ids, alone[index].top_ids) << "stream " << index;
    EXPECT_EQ(together[index].top_logprobs, alone[index].top_logprobs) << "stream " << index;
    // logprobs = 1: one alternative per token; greedy streams (even) chose it.
    ASSERT_EQ(together[index].top_ids.size(), together[index].tokens.size());
    for (size_t token = 0; token < together[index].tokens.size(); ++token) {
      ASSERT_EQ(together[index].top_ids[token].size(), 1u) << "stream " << index;
      if (index % 2 == 0) {
        EXPECT_EQ(together[index].top_ids[token][0], together[index].tokens[token]);
        EXPECT_EQ(together[index].top_logprobs[token][0], together[index].logprobs[token]);
      }
    }
    const v1::GenerateResponse& last = together[index].messages.back();
    ASSERT_TRUE(last.has_finish());
    EXPECT_EQ(last.finish().reason(), v1::FINISH_REASON_LENGTH);
  }
  const v1::LoadReport load = GetLoad(*channel_);
  EXPECT_TRUE(load.accepting());
  EXPECT_EQ(load.kv_cache_total_blocks(), 512);
  EXPECT_EQ(load.replica_id(), worker_.address());
  EXPECT_EQ(load.model(), "tiny");
}

TEST_F(ReplicaServiceTest, CancelledStreamFreesItsBlocks) {
  const StreamResult result =
      Generate(*channel_, Start(3, 3000),
               [](grpc::ClientContext& context, auto&, const StreamResult& so_far) {
                 if (so_far.tokens.size() >= 3) context.TryCancel();
               });
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(result.tokens.size(), 3000u);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  v1::LoadReport load = GetLoad(*channel_);
  while (absl::Now() < deadline &&
         (load.kv_cache_usage_ratio() > 0.0 || load.running_requests() > 0)) {
    absl::SleepFor(absl::Milliseconds(10));
    load = GetLoad(*channel_);
  }
  EXPECT_EQ(load.kv_cache_usage_ratio(), 0.0);
  EXPECT_EQ(load.running_requests(), 0);
  EXPECT_EQ(load.kv_cache_free_blocks(), load.kv_cache_total_blocks());
}

TEST_F(ReplicaServiceTest, GetLoadReportsThePrefixCacheSummary) {
  const v1::LoadReport before = GetLoad(*channel_);
  EXPECT_EQ(before.prefix_cache().hash_function(), v1::BLOCK_HASH_FUNCTION_FNV1A_64_CHAINED);
  EXPECT_TRUE(before.prefix_cache().bits().empty()) << "nothing cached yet";

  v1::StartGeneration start = Start(7, 3);
  start.clear_prompt_token_ids();
  std::vector<int32_t> prompt;
  for (int32_t position = 0; position < 64; ++position) prompt.push_back(500 + 37 * position);
  for (const int32_t id : prompt) start.add_prompt_token_ids(id);
  const StreamResult result = Generate(*channel_, start);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();

  BlockHashChain chain(16);
  chain.Extend(prompt);
  // The router's view: the summary as the proto carries it.
  const auto summary_of = [](const v1::LoadReport& load) {
    return PrefixSummary{.block_size_tokens = load.prefix_cache().block_size_tokens(),
                         .probe_count = load.prefix_cache().probe_count(),
                         .bits = load.prefix_cache().bits(),
                         .inserted_blocks = load.prefix_cache().inserted_blocks()};
  };
  // The engine rebuilds the summary at most every 100 ms; allow 1 s.
  v1::LoadReport load = GetLoad(*channel_);
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  while (CountCachedLeadingBlocks(summary_of(load), chain.hashes()) < 4 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
    load = GetLoad(*channel_);
  }
  const v1::PrefixCacheSummary& prefix = load.prefix_cache();
  EXPECT_EQ(prefix.block_size_tokens(), 16);
  EXPECT_EQ(prefix.hash_function(), v1::BLOCK_HASH_FUNCTION_FNV1A_64_CHAINED);
  EXPECT_EQ(prefix.probe_count(), 7);
  EXPECT_EQ(prefix.bits().size(), 64u * 1024u);
  EXPECT_EQ(prefix.inserted_blocks(), 4);
  EXPECT_EQ(CountCachedLeadingBlocks(summary_of(load), chain.hashes()), 4);
  BlockHashChain other(16);
  other.Extend(std::vector<int32_t>(16, 9));
  EXPECT_EQ(CountCachedLeadingBlocks(summary_of(load), other.hashes()), 0);
}

TEST_F(ReplicaServiceTest, ForceTokensRewindsTheStream) {
  bool forced = false;
  const StreamResult result = Generate(
      *channel_, Start(4, 12), [&](grpc::ClientContext&, auto& stream, const StreamResult& so_far) {
        if (forced || so_far.tokens.size() < 4) return;
        forced = true;
        v1::GenerateRequest request;
        request.mutable_force()->set_at_index(2);
        request.mutable_force()->add_token_ids(4000);
        request.mutable_force()->add_token_ids(4001);
        stream.Write(request);
      });
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_EQ(result.tokens.size(), 12u);
  EXPECT_EQ(result.tokens[2], 4000);
  EXPECT_EQ(result.tokens[3], 4001);
  EXPECT_EQ(result.logprobs[2], 0.0f);
  // Forced tokens carry no alternatives; sampled ones do.
  EXPECT_TRUE(result.top_ids[2].empty());
  EXPECT_TRUE(result.top_ids[3].empty());
  EXPECT_EQ(result.top_ids[0].size(), 1u);
  EXPECT_EQ(result.top_ids[11].size(), 1u);
}

TEST_F(ReplicaServiceTest, BadStreamsGetClearStatuses) {
  v1::StartGeneration empty = Start(1, 5);
  empty.clear_prompt_token_ids();
  EXPECT_EQ(Generate(*channel_, empty).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::StartGeneration outside = Start(1, 5);
  outside.add_prompt_token_ids(1 << 30);
  EXPECT_EQ(Generate(*channel_, outside).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ReplicaServiceTest, SigtermFinishesInFlightStreamsThenExitsZero) {
  // Long enough (~10 ms a step on the tiny model: seconds) that the worker still drains while the
  // test checks health and sends a new request.
  constexpr int kTokens = 300;
  bool signalled = false;
  HealthCheckResponse::ServingStatus health_while_draining = HealthCheckResponse::UNKNOWN;
  StreamResult refused;
  const StreamResult result =
      Generate(*channel_, Start(5, kTokens), [&](grpc::ClientContext&, auto&, const StreamResult&) {
        if (signalled) return;
        signalled = true;
        worker_.process().Signal(SIGTERM);
        const absl::Time deadline = absl::Now() + absl::Seconds(5);
        do {
          health_while_draining = testing::HealthStatus(*channel_, kReplicaService);
        } while (health_while_draining == HealthCheckResponse::SERVING && absl::Now() < deadline);
        refused = Generate(*channel_, Start(6, 5));
      });
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.tokens.size(), static_cast<size_t>(kTokens));
  EXPECT_TRUE(result.messages.back().has_finish());
  EXPECT_EQ(health_while_draining, HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.status.error_message().find("draining"), std::string::npos)
      << refused.status.error_message();
  EXPECT_EQ(worker_.process().WaitForExit(absl::Seconds(30)), 0);
}

}  // namespace
}  // namespace reflect
