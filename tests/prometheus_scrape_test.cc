// A real Prometheus server (Debian's prometheus, run as a child process) scrapes a real
// reflect-worker's --metrics_port: after requests ran, PromQL over the scraped series answers —
// the step count, a step-duration quantile from the histogram buckets, the KV block gauges and
// the prefix-cache counters — so the exposition is what Prometheus itself accepts, not only what
// our own parser reads. A second test does the same for a router and its replica, with PromQL
// over the router's time-to-first-token histogram. Without /usr/bin/prometheus the test fails and
// says to run tools/install-deps.sh.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "reflect/internal/v1/replica.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/grpc_health.h"
#include "tests/support/http_client.h"
#include "tests/support/prometheus_server.h"
#include "tests/support/serving_cluster.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

namespace v1 = internal::v1;

constexpr absl::Duration kTimeout = absl::Seconds(60);

// Runs one greedy request of `max_tokens` on a 40-token prompt to its end.
void Generate(grpc::Channel& channel, int seed, int max_tokens) {
  auto stub = v1::Replica::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto stream = stub->Generate(&context);
  v1::GenerateRequest request;
  v1::StartGeneration& start = *request.mutable_start();
  start.set_request_id("prometheus-" + std::to_string(seed));
  for (int position = 0; position < 40; ++position) start.add_prompt_token_ids(500 + position);
  start.mutable_sampling()->set_top_p(1.0);
  start.mutable_sampling()->set_repetition_penalty(1.0);
  start.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
  start.mutable_sampling()->set_max_tokens(max_tokens);
  start.mutable_sampling()->set_ignore_eos(true);
  if (stream->Write(request)) {
    v1::GenerateResponse response;
    while (stream->Read(&response)) {
    }
  }
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// The single number an instant query returns (NaN when it returned none or several).
double Scalar(testing::PrometheusServer& prometheus, const std::string& promql) {
  absl::StatusOr<nlohmann::json> data = prometheus.WaitForResult(promql);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return std::nan("");
  const std::vector<double> values = testing::VectorValues(*data);
  EXPECT_EQ(values.size(), 1u) << promql << ": " << data->dump();
  return values.size() == 1 ? values.front() : std::nan("");
}

// True once the PromQL filter `condition` selects something (within WaitForResult's timeout).
bool Eventually(testing::PrometheusServer& prometheus, const std::string& condition) {
  absl::StatusOr<nlohmann::json> data = prometheus.WaitForResult(condition);
  EXPECT_TRUE(data.ok()) << data.status();
  return data.ok();
}

TEST(PrometheusScrapeTest, PrometheusScrapesTheWorkerAndAnswersPromQl) {
  testing::ChildProcess worker(
      testing::WorkerArguments(testing::TestModelPath("tiny").string(), {"--metrics_port", "0"}));
  const std::string address = worker.WaitForLine("listening ", kTimeout);
  ASSERT_FALSE(address.empty()) << "reflect-worker did not report its port";
  const std::string metrics_address = worker.WaitForLine("metrics ", kTimeout);
  ASSERT_FALSE(metrics_address.empty()) << "reflect-worker did not report its metrics port";

  absl::StatusOr<std::unique_ptr<testing::PrometheusServer>> prometheus =
      testing::PrometheusServer::Start({.targets = {metrics_address}});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  ASSERT_TRUE(testing::WaitForHealth(*channel, "reflect.internal.v1.Replica",
                                     grpc::health::v1::HealthCheckResponse::SERVING));
  for (int seed = 1; seed <= 3; ++seed) Generate(*channel, seed, 12);

  // The target is up (Prometheus parsed its exposition), and carries the job's labels.
  const double up = Scalar(**prometheus, "up{job=\"reflect\"}");
  EXPECT_EQ(up, 1.0) << (*prometheus)->Targets()->dump();

  // The steps the requests ran, once a scrape after them has landed: 3 prefills + 3 × 11 decodes
  // at least.
  absl::StatusOr<nlohmann::json> steps =
      (*prometheus)
          ->WaitForResult("sum(reflect_step_duration_seconds_count{model_name=\"tiny\"}) >= 36");
  ASSERT_TRUE(steps.ok()) << steps.status();
  EXPECT_GE(testing::VectorValues(*steps).at(0), 36.0);

  // A quantile from the cumulative buckets: finite, positive, and inside the bucket range.
  const double median_step = Scalar(
      **prometheus, "histogram_quantile(0.5, sum by (le) (reflect_step_duration_seconds_bucket))");
  EXPECT_GT(median_step, 0.0);
  EXPECT_LE(median_step, 3600.0);
  const double p99_batch =
      Scalar(**prometheus, "histogram_quantile(0.99, sum by (le) (reflect_batch_size_bucket))");
  EXPECT_GT(p99_batch, 0.0);
  EXPECT_LE(p99_batch, 1.0);  // the requests ran one at a time

  // The KV gauges add up to the pool; once the requests are gone from the engine's published
  // load (a moment after their streams end) no block is in use; the prefix cache was queried for
  // every prompt token and the repeated prompt hit it. Conditions are waited for, since a scrape
  // may land between a stream's end and the engine publishing its load.
  EXPECT_TRUE(Eventually(**prometheus, "sum(reflect_kv_cache_blocks) == 512"));
  EXPECT_TRUE(Eventually(**prometheus, "reflect_kv_cache_usage_ratio == 0"));
  EXPECT_TRUE(Eventually(**prometheus, "reflect_kv_cache_blocks{state=\"used\"} == 0"));
  EXPECT_TRUE(Eventually(**prometheus, "reflect_prefix_cache_queries_total == 120"));
  EXPECT_TRUE(Eventually(
      **prometheus, "reflect_prefix_cache_hits_total / reflect_prefix_cache_queries_total > 0"));
}

// The router and its replica scraped together, as an operator's Prometheus would: after chats over
// the OpenAI API, PromQL over the router's time-to-first-token histogram gives a median and a
// p99, and both targets are up.
TEST(PrometheusScrapeTest, PrometheusScrapesTheRouterAndAReplica) {
  testing::ServingClusterOptions options;
  testing::ServingCluster cluster(options);
  ASSERT_TRUE(cluster.ready()) << "the cluster did not come up";
  absl::StatusOr<std::unique_ptr<testing::PrometheusServer>> prometheus =
      testing::PrometheusServer::Start(
          {.targets = {cluster.http_address(), cluster.replica_metrics_address(0)}});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  for (int index = 0; index < 4; ++index) {
    const nlohmann::json body = {
        {"messages",
         {{{"role", "user"}, {"content", "Scrape me, number " + std::to_string(index)}}}},
        {"max_tokens", 6},
        {"ignore_eos", true},
        {"stream", index % 2 == 0}};
    const testing::HttpReply reply =
        testing::HttpCall(cluster.http_address(), "POST", "/v1/chat/completions", body.dump());
    ASSERT_EQ(reply.status, 200) << reply.body;
  }

  // Both targets up, once each has had its first scrape.
  EXPECT_TRUE(Eventually(**prometheus, "count(up{job=\"reflect\"} == 1) == 2"))
      << (*prometheus)->Targets()->dump();
  EXPECT_TRUE(Eventually(
      **prometheus, "sum(reflect_time_to_first_token_seconds_count{model_name=\"tiny\"}) >= 4"));
  for (const char* quantile : {"0.5", "0.99"}) {
    const double seconds =
        Scalar(**prometheus, std::string("histogram_quantile(") + quantile +
                                 ", sum by (le) (reflect_time_to_first_token_seconds_bucket))");
    EXPECT_GT(seconds, 0.0) << quantile;
    EXPECT_LT(seconds, 60.0) << quantile;
  }
  // The replica's own series arrive through the same server.
  EXPECT_TRUE(Eventually(**prometheus, "sum(reflect_step_duration_seconds_count) > 0"));
}

TEST(PrometheusScrapeTest, MissingPrometheusSaysToRunInstallDeps) {
  setenv("REFLECT_PROMETHEUS", "/nonexistent/prometheus", 1);
  absl::StatusOr<std::unique_ptr<testing::PrometheusServer>> prometheus =
      testing::PrometheusServer::Start({.targets = {"127.0.0.1:9"}});
  unsetenv("REFLECT_PROMETHEUS");
  ASSERT_FALSE(prometheus.ok());
  EXPECT_EQ(prometheus.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(prometheus.status().message().find("tools/install-deps.sh"), std::string::npos)
      << prometheus.status();
}

}  // namespace
}  // namespace reflect
