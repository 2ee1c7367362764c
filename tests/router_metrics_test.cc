// RouterMetrics fed with known outcomes: the serialized text, parsed as a Prometheus server
// would parse it, has the names of DESIGN §8 with their types, the model_name, outcome, section
// and reason labels, buckets reaching 3600 s, and exactly the counts and sums fed in.
#include "router/router_metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "router/request_router.h"
#include "tests/support/prometheus_server.h"

namespace reflect {
namespace {

using testing::ParsedMetrics;
using testing::ParsePrometheusText;

constexpr char kModel[] = "tiny-reflection";

GenerationOutcome Outcome(int64_t prompt_tokens, SectionCounts sections, double queue_seconds,
                          double first_token_seconds, std::optional<double> first_output_seconds,
                          double e2e_seconds) {
  GenerationOutcome outcome;
  outcome.usage.prompt_tokens = prompt_tokens;
  outcome.usage.sections = sections;
  outcome.usage.completion_tokens =
      sections.thinking_tokens + sections.reflection_tokens + sections.output_tokens;
  outcome.timings.queue_seconds = queue_seconds;
  outcome.timings.time_to_first_token_seconds = first_token_seconds;
  outcome.timings.time_to_first_output_token_seconds = first_output_seconds;
  outcome.timings.e2e_seconds = e2e_seconds;
  return outcome;
}

ParsedMetrics Parse(const RouterMetrics& metrics) {
  absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(metrics.Serialize());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : ParsedMetrics{};
}

// The cumulative count of the bucket of `histogram` whose upper bound is `le`.
std::optional<double> Bucket(const ParsedMetrics& parsed, const std::string& histogram,
                             const std::string& le) {
  return parsed.Value(histogram + "_bucket", {{"model_name", kModel}, {"le", le}});
}

TEST(RouterMetricsTest, EveryFamilyHasItsDesignNameTypeAndModelName) {
  RouterMetrics metrics(kModel);
  const ParsedMetrics parsed = Parse(metrics);
  const std::map<std::string, std::string> expected = {
      {"reflect_requests_total", "counter"},
      {"reflect_prompt_tokens_total", "counter"},
      {"reflect_generation_tokens_total", "counter"},
      {"reflect_requests_rejected_total", "counter"},
      {"reflect_num_requests_running", "gauge"},
      {"reflect_num_requests_waiting", "gauge"},
      {"reflect_time_to_first_token_seconds", "histogram"},
      {"reflect_time_to_first_output_token_seconds", "histogram"},
      {"reflect_inter_token_latency_seconds", "histogram"},
      {"reflect_e2e_request_latency_seconds", "histogram"},
      {"reflect_request_queue_time_seconds", "histogram"},
      {"reflect_reflections_per_request", "histogram"},
  };
  EXPECT_EQ(parsed.types, expected);
  for (const auto& [family, type] : parsed.types) {
    // DESIGN §8: `_total` only on counters.
    EXPECT_EQ(family.ends_with("_total"), type == "counter") << family;
    EXPECT_FALSE(parsed.help.at(family).empty()) << family;
  }
  ASSERT_FALSE(parsed.samples.empty());
  for (const testing::MetricSample& sample : parsed.samples) {
    EXPECT_EQ(sample.labels.count("model_name"), 1u) << sample.name;
    EXPECT_EQ(sample.labels.at("model_name"), kModel) << sample.name;
  }
  // Series exist at zero before anything happened, so rate() sees the first increase.
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "ok"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "deadline_exceeded"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "queue_full"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_generation_tokens_total", {{"section", "reflection"}}), 0.0);
}

TEST(RouterMetricsTest, LatencyBucketsReachAnHour) {
  RouterMetrics metrics(kModel);
  const ParsedMetrics parsed = Parse(metrics);
  for (const char* histogram :
       {"reflect_time_to_first_token_seconds", "reflect_time_to_first_output_token_seconds",
        "reflect_inter_token_latency_seconds", "reflect_e2e_request_latency_seconds",
        "reflect_request_queue_time_seconds"}) {
    std::set<double> bounds;
    for (const testing::MetricSample& sample : parsed.Find(std::string(histogram) + "_bucket")) {
      if (sample.labels.at("le") != "+Inf") bounds.insert(std::stod(sample.labels.at("le")));
    }
    ASSERT_FALSE(bounds.empty()) << histogram;
    EXPECT_EQ(*bounds.begin(), 0.001) << histogram;
    EXPECT_EQ(*bounds.rbegin(), 3600.0) << histogram;
    EXPECT_TRUE(Bucket(parsed, histogram, "+Inf").has_value()) << histogram;
  }
}

TEST(RouterMetricsTest, CountsAndSumsAreWhatWasFed) {
  RouterMetrics metrics(kModel);
  metrics.RequestFinished(Outcome(
      100, {.thinking_tokens = 40, .reflection_tokens = 10, .output_tokens = 5, .reflections = 2},
      0.05, 0.2, 3.5, 4.0));
  metrics.RequestFinished(Outcome(
      20, {.thinking_tokens = 0, .reflection_tokens = 0, .output_tokens = 7, .reflections = 0},
      0.002, 0.03, 0.03, 0.4));
  // A long reflection trace that never reached <output> (no first-output observation) and ran
  // for half an hour: it must land in a finite bucket.
  metrics.RequestFinished(Outcome(
      3, {.thinking_tokens = 900, .reflection_tokens = 100, .output_tokens = 0, .reflections = 9},
      1.5, 2.0, std::nullopt, 1800.5));
  metrics.RequestFinished(absl::CancelledError("client went away"));
  metrics.RequestFinished(absl::DeadlineExceededError("too slow"));
  metrics.RequestFinished(absl::DeadlineExceededError("too slow"));
  metrics.RequestFinished(absl::FailedPreconditionError("not foreseen: counted on its own"));
  metrics.RequestRejected("queue_full");
  metrics.RequestRejected("queue_full");
  metrics.RequestRejected("no_replica");
  metrics.RequestRejected("payload_too_large");  // not foreseen: still counted, on its own
  for (double seconds : {0.01, 0.02, 0.04, 120.0}) metrics.ObserveInterTokenLatency(seconds);
  metrics.SetLoad(
      RouterLoad{.queued_requests = 7, .queued_prompt_tokens = 900, .running_requests = 3});

  const ParsedMetrics parsed = Parse(metrics);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "ok"}}), 3.0);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "cancelled"}}), 1.0);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "deadline_exceeded"}}), 2.0);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "internal"}}), 0.0);
  EXPECT_EQ(parsed.Value("reflect_requests_total", {{"outcome", "failed_precondition"}}), 1.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "queue_full"}}), 2.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "no_replica"}}), 1.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "payload_too_large"}}),
            1.0);
  EXPECT_EQ(parsed.Value("reflect_requests_rejected_total", {{"reason", "unauthenticated"}}), 0.0);

  EXPECT_EQ(parsed.Value("reflect_prompt_tokens_total"), 123.0);
  EXPECT_EQ(parsed.Value("reflect_generation_tokens_total", {{"section", "thinking"}}), 940.0);
  EXPECT_EQ(parsed.Value("reflect_generation_tokens_total", {{"section", "reflection"}}), 110.0);
  EXPECT_EQ(parsed.Value("reflect_generation_tokens_total", {{"section", "output"}}), 12.0);

  EXPECT_EQ(parsed.Value("reflect_num_requests_waiting"), 7.0);
  EXPECT_EQ(parsed.Value("reflect_num_requests_running"), 3.0);

  // Histograms: count, sum, and where the observations fell (buckets are cumulative).
  const std::string ttft = "reflect_time_to_first_token_seconds";
  EXPECT_EQ(parsed.Value(ttft + "_count"), 3.0);
  EXPECT_DOUBLE_EQ(*parsed.Value(ttft + "_sum"), 2.23);
  EXPECT_EQ(Bucket(parsed, ttft, "0.025"), 0.0);
  EXPECT_EQ(Bucket(parsed, ttft, "0.05"), 1.0);
  EXPECT_EQ(Bucket(parsed, ttft, "0.25"), 2.0);
  EXPECT_EQ(Bucket(parsed, ttft, "2.5"), 3.0);
  EXPECT_EQ(Bucket(parsed, ttft, "3600"), 3.0);
  EXPECT_EQ(Bucket(parsed, ttft, "+Inf"), 3.0);

  const std::string ttfot = "reflect_time_to_first_output_token_seconds";
  EXPECT_EQ(parsed.Value(ttfot + "_count"), 2.0);
  EXPECT_DOUBLE_EQ(*parsed.Value(ttfot + "_sum"), 3.53);

  const std::string e2e = "reflect_e2e_request_latency_seconds";
  EXPECT_EQ(parsed.Value(e2e + "_count"), 3.0);
  EXPECT_DOUBLE_EQ(*parsed.Value(e2e + "_sum"), 1804.9);
  EXPECT_EQ(Bucket(parsed, e2e, "1800"), 2.0);
  EXPECT_EQ(Bucket(parsed, e2e, "3600"), 3.0);

  const std::string queue = "reflect_request_queue_time_seconds";
  EXPECT_EQ(parsed.Value(queue + "_count"), 3.0);
  EXPECT_DOUBLE_EQ(*parsed.Value(queue + "_sum"), 1.552);

  const std::string inter_token = "reflect_inter_token_latency_seconds";
  EXPECT_EQ(parsed.Value(inter_token + "_count"), 4.0);
  EXPECT_DOUBLE_EQ(*parsed.Value(inter_token + "_sum"), 120.07);
  EXPECT_EQ(Bucket(parsed, inter_token, "0.01"), 1.0);
  EXPECT_EQ(Bucket(parsed, inter_token, "0.02"), 2.0);
  EXPECT_EQ(Bucket(parsed, inter_token, "0.05"), 3.0);
  EXPECT_EQ(Bucket(parsed, inter_token, "3600"), 4.0);

  const std::string reflections = "reflect_reflections_per_request";
  EXPECT_EQ(parsed.Value(reflections + "_count"), 3.0);
  EXPECT_EQ(parsed.Value(reflections + "_sum"), 11.0);
  EXPECT_EQ(Bucket(parsed, reflections, "0"), 1.0);
  EXPECT_EQ(Bucket(parsed, reflections, "2"), 2.0);
  EXPECT_EQ(Bucket(parsed, reflections, "13"), 3.0);

  // Every histogram's buckets never decrease and end at its count.
  for (const auto& [family, type] : parsed.types) {
    if (type != "histogram") continue;
    double previous = 0.0;
    for (const testing::MetricSample& sample : parsed.Find(family + "_bucket")) {
      EXPECT_GE(sample.value, previous) << family << " le=" << sample.labels.at("le");
      previous = sample.value;
    }
    EXPECT_EQ(Bucket(parsed, family, "+Inf"), parsed.Value(family + "_count")) << family;
  }
}

TEST(RouterMetricsTest, ModelNameTellsRoutersApart) {
  RouterMetrics first("model-a");
  RouterMetrics second("model-b");
  first.RequestRejected("queue_full");
  const absl::StatusOr<ParsedMetrics> parsed = ParsePrometheusText(second.Serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->Value("reflect_requests_rejected_total",
                          {{"model_name", "model-b"}, {"reason", "queue_full"}}),
            0.0);
  EXPECT_TRUE(parsed->Find("reflect_requests_total", {{"model_name", "model-a"}}).empty());
}

}  // namespace
}  // namespace reflect
