// A real reflect-worker with --metrics_port 0, driven over its internal gRPC API, scraped over
// HTTP like Prometheus does: the replica's metric families have the names and types of DESIGN §8
// and model_name; engine steps feed reflect_step_duration_seconds and reflect_batch_size; the
// prefix-cache counters count exactly the prompt tokens admitted and the tokens the second of two
// identical prompts found cached; the KV block gauges add up to the pool; counters never move
// while the replica is idle.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/grpc_health.h"
#include "tests/support/prometheus_server.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

namespace v1 = internal::v1;
using testing::ParsedMetrics;

constexpr absl::Duration kTimeout = absl::Seconds(60);
constexpr int kBlockTokens = 16;   // reflect-worker's default --block_size
constexpr int kKvBlocks = 512;     // testing::WorkerArguments' --num-kv-blocks
constexpr int kPromptTokens = 48;  // three full blocks, so a repeat can hit the prefix cache

v1::StartGeneration Start(int seed, int max_tokens) {
  v1::StartGeneration start;
  start.set_request_id("metrics-" + std::to_string(seed));
  for (int position = 0; position < kPromptTokens; ++position) {
    start.add_prompt_token_ids(1000 + position * 31);
  }
  v1::SamplingParams& sampling = *start.mutable_sampling();
  sampling.set_temperature(0.0);
  sampling.set_top_p(1.0);
  sampling.set_repetition_penalty(1.0);
  sampling.set_seed(static_cast<uint64_t>(seed));
  sampling.set_max_tokens(max_tokens);
  sampling.set_ignore_eos(true);
  return start;
}

// Runs one Generate stream to its end; returns its Finish (empty when the stream failed).
v1::Finish Generate(grpc::Channel& channel, const v1::StartGeneration& start) {
  auto stub = v1::Replica::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = stub->Generate(&context);
  v1::GenerateRequest request;
  *request.mutable_start() = start;
  v1::Finish finish;
  if (stream->Write(request)) {
    v1::GenerateResponse response;
    while (stream->Read(&response)) {
      if (response.has_finish()) finish = response.finish();
    }
  }
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(finish.reason(), v1::FINISH_REASON_LENGTH);
  return finish;
}

class ReplicaMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = worker_.WaitForLine("listening ", kTimeout);
    ASSERT_FALSE(address_.empty()) << "reflect-worker did not report its port";
    metrics_address_ = worker_.WaitForLine("metrics ", kTimeout);
    ASSERT_FALSE(metrics_address_.empty()) << "reflect-worker did not report its metrics port";
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    ASSERT_TRUE(testing::WaitForHealth(*channel_, "reflect.internal.v1.Replica",
                                       grpc::health::v1::HealthCheckResponse::SERVING));
  }

  ParsedMetrics Scrape() {
    absl::StatusOr<ParsedMetrics> parsed = testing::ScrapeMetrics(metrics_address_);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return parsed.ok() ? *parsed : ParsedMetrics{};
  }

  // A scrape once the replica is idle. A stream's last message is sent from inside the engine
  // step that finishes it, before that step is counted (on_step) and before the engine publishes
  // its load, so a scrape right after a stream ends may still see the request; the load that
  // shows it gone is published after the step was observed.
  ParsedMetrics ScrapeWhenIdle() {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    for (;;) {
      ParsedMetrics parsed = Scrape();
      const bool idle = parsed.Value("reflect_num_requests_running") == 0.0 &&
                        parsed.Value("reflect_num_requests_waiting") == 0.0 &&
                        parsed.Value("reflect_kv_cache_blocks", {{"state", "used"}}) == 0.0;
      if (idle || absl::Now() > deadline) return parsed;
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  testing::ChildProcess worker_{
      testing::WorkerArguments(testing::TestModelPath("tiny").string(), {"--metrics_port", "0"})};
  std::string address_;
  std::string metrics_address_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(ReplicaMetricsTest, FamiliesHaveTheirDesignNamesTypesAndModelName) {
  const ParsedMetrics parsed = Scrape();
  const std::map<std::string, std::string> expected = {
      {"reflect_num_requests_running", "gauge"},
      {"reflect_num_requests_waiting", "gauge"},
      {"reflect_kv_cache_usage_ratio", "gauge"},
      {"reflect_kv_cache_blocks", "gauge"},
      {"reflect_prefix_cache_queries_total", "counter"},
      {"reflect_prefix_cache_hits_total", "counter"},
      {"reflect_preemptions_total", "counter"},
      {"reflect_requests_rejected_total", "counter"},
      {"reflect_step_duration_seconds", "histogram"},
      {"reflect_batch_size", "histogram"},
  };
  for (const auto& [family, type] : expected) {
    ASSERT_EQ(parsed.types.count(family), 1u) << family;
    EXPECT_EQ(parsed.types.at(family), type) << family;
  }
  for (const testing::MetricSample& sample : parsed.samples) {
    // prometheus-cpp's Exposer adds its own exposer_* series; ours all name the model.
    if (!sample.name.starts_with("reflect_")) continue;
    EXPECT_EQ(sample.labels.count("model_name"), 1u) << sample.name;
    EXPECT_EQ(sample.labels.at("model_name"), "tiny") << sample.name;
  }
  EXPECT_EQ(parsed.Value("reflect_preemptions_total", {{"mode", "recompute"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_preemptions_total", {{"mode", "swap"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "queue_full"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_step_duration_seconds_bucket", {{"le", "3600"}}), 0.0);
}

TEST_F(ReplicaMetricsTest, StepsPrefixCacheAndBlocksAfterRequests) {
  const v1::Finish first = Generate(*channel_, Start(1, 8));
  const v1::Finish second = Generate(*channel_, Start(2, 8));
  EXPECT_EQ(first.cached_prompt_tokens(), 0);
  EXPECT_GT(second.cached_prompt_tokens(), 0);

  const ParsedMetrics parsed = ScrapeWhenIdle();
  const std::optional<double> steps = parsed.Value("reflect_step_duration_seconds_count");
  ASSERT_TRUE(steps.has_value());
  // Each request prefills once (with its first token) and decodes 7 more tokens.
  EXPECT_EQ(*steps, 16.0);
  EXPECT_GT(parsed.Value("reflect_step_duration_seconds_sum").value_or(0.0), 0.0);
  EXPECT_EQ(parsed.Value("reflect_step_duration_seconds_bucket", {{"le", "+Inf"}}), steps);
  // One batch-size observation per step; the requests ran one after the other, so every step
  // held exactly one sequence.
  EXPECT_EQ(parsed.Value("reflect_batch_size_count"), steps);
  EXPECT_EQ(parsed.Value("reflect_batch_size_sum"), steps);
  EXPECT_EQ(parsed.Value("reflect_batch_size_bucket", {{"le", "1"}}), steps);

  // Queries count each admitted prompt; hits are what the second prompt found cached.
  EXPECT_EQ(parsed.Value("reflect_prefix_cache_queries_total"), 2.0 * kPromptTokens);
  EXPECT_EQ(parsed.Value("reflect_prefix_cache_hits_total"),
            static_cast<double>(second.cached_prompt_tokens()));
  EXPECT_EQ(second.cached_prompt_tokens() % kBlockTokens, 0);

  // Idle now: every block is either free or holds the cached prompt, and they add up.
  const double used = parsed.Value("reflect_kv_cache_blocks", {{"state", "used"}}).value_or(-1);
  const double free = parsed.Value("reflect_kv_cache_blocks", {{"state", "free"}}).value_or(-1);
  const double cached = parsed.Value("reflect_kv_cache_blocks", {{"state", "cached"}}).value_or(-1);
  EXPECT_EQ(used + free + cached, kKvBlocks);
  EXPECT_EQ(used, 0.0);
  EXPECT_GT(cached, 0.0);
  EXPECT_EQ(parsed.Value("reflect_kv_cache_usage_ratio"), 0.0);
  EXPECT_EQ(parsed.Value("reflect_num_requests_running"), 0.0);
  EXPECT_EQ(parsed.Value("reflect_num_requests_waiting"), 0.0);

  // Scrapes are refreshes, not increments: an idle replica's counters stay where they are.
  const ParsedMetrics again = Scrape();
  for (const char* counter :
       {"reflect_prefix_cache_queries_total", "reflect_prefix_cache_hits_total",
        "reflect_step_duration_seconds_count", "reflect_batch_size_count"}) {
    EXPECT_EQ(again.Value(counter), parsed.Value(counter)) << counter;
  }
}

TEST_F(ReplicaMetricsTest, ConcurrentRequestsShareSteps) {
  constexpr int kStreams = 4;
  std::vector<std::thread> threads;
  for (int index = 0; index < kStreams; ++index) {
    threads.emplace_back([&, index] { Generate(*channel_, Start(10 + index, 24)); });
  }
  // While they run, a scrape sees the blocks in use, and the gauges still add up.
  const ParsedMetrics during = Scrape();
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(during.Value("reflect_kv_cache_blocks", {{"state", "used"}}).value_or(0) +
                during.Value("reflect_kv_cache_blocks", {{"state", "free"}}).value_or(0) +
                during.Value("reflect_kv_cache_blocks", {{"state", "cached"}}).value_or(0),
            kKvBlocks);

  const ParsedMetrics after = ScrapeWhenIdle();
  const double steps = after.Value("reflect_batch_size_count").value_or(0);
  const double sequences = after.Value("reflect_batch_size_sum").value_or(0);
  ASSERT_GT(steps, 0.0);
  // 4 requests × 24 tokens ran in fewer steps than one at a time would need: steps were shared.
  EXPECT_LT(after.Value("reflect_batch_size_bucket", {{"le", "1"}}).value_or(steps), steps);
  EXPECT_GT(sequences, steps);
  // …and never held more sequences than there were requests.
  EXPECT_EQ(after.Value("reflect_batch_size_bucket", {{"le", "4"}}), steps);
  EXPECT_EQ(after.Value("reflect_prefix_cache_queries_total"), kStreams * kPromptTokens * 1.0);
}

}  // namespace
}  // namespace reflect
