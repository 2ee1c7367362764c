// Scenario files (loadtest/scenario.h): the shipped scenarios parse, a full document maps onto
// the Scenario fields, and each malformed document fails naming the offending key.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "loadtest/scenario.h"
#include "nlohmann/json.hpp"

namespace reflect::loadtest {
namespace {

using Json = nlohmann::json;

const std::filesystem::path kScenarioDirectory =
    std::filesystem::path(REFLECT_SOURCE_DIR) / "loadtest" / "scenarios";

// A valid open-loop document that the tests below vary.
Json SpikeDocument() {
  return Json::parse(R"({
    "name": "spike",
    "description": "a test spike",
    "rate_scale_note": "sized for nothing in particular",
    "protocol": "http",
    "mode": "open",
    "run_length_seconds": 90,
    "seed": 77,
    "arrivals": {"profile": "step_spike", "requests_per_second": 1.5, "spike_multiplier": 4,
                 "spike_start_seconds": 30, "spike_duration_seconds": 20.5, "burstiness": 0.5},
    "workload": {
      "prompt_tokens": {"kind": "uniform", "minimum": 10, "maximum": 20},
      "output_tokens": {"kind": "lognormal", "median": 300, "sigma": 0.8, "minimum": 2,
                        "maximum": 4000},
      "add_reflection_system_prompt": false,
      "temperature": 0.6,
      "sampling_seed": 5,
      "high_priority_fraction": 0.25,
      "high_priority": -3
    },
    "slo": {"ttft_seconds": 1.5, "time_to_first_output_token_seconds": 30,
            "inter_token_latency_seconds": 0.2, "e2e_seconds": 100},
    "client_timeout_seconds": 600
  })");
}

absl::StatusOr<Scenario> Parse(const Json& document) {
  return ParseScenario(document.dump(), "test.json");
}

TEST(ScenarioTest, ShippedScenariosParse) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(kScenarioDirectory)) {
    SCOPED_TRACE(entry.path().string());
    absl::StatusOr<Scenario> scenario = LoadScenario(entry.path());
    ASSERT_TRUE(scenario.ok()) << scenario.status();
    EXPECT_EQ(scenario->name, entry.path().stem().string());
    EXPECT_FALSE(scenario->description.empty());
    EXPECT_FALSE(scenario->rate_scale_note.empty());
    names.insert(scenario->name);
  }
  EXPECT_EQ(names,
            (std::set<std::string>{"playground-launch", "steady", "long-traces", "many-short"}));
}

TEST(ScenarioTest, EveryFieldIsRead) {
  absl::StatusOr<Scenario> scenario = Parse(SpikeDocument());
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  EXPECT_EQ(scenario->name, "spike");
  EXPECT_EQ(scenario->description, "a test spike");
  EXPECT_EQ(scenario->rate_scale_note, "sized for nothing in particular");
  EXPECT_EQ(scenario->protocol, Protocol::kHttp);
  EXPECT_EQ(scenario->mode, LoopMode::kOpen);
  EXPECT_EQ(scenario->run_length, absl::Seconds(90));
  EXPECT_EQ(scenario->seed, 77u);
  const RateProfile& rate = scenario->arrivals.rate;
  EXPECT_EQ(rate.kind, RateProfile::Kind::kStepSpike);
  EXPECT_EQ(rate.requests_per_second, 1.5);
  EXPECT_EQ(rate.spike_multiplier, 4);
  EXPECT_EQ(rate.spike_start, absl::Seconds(30));
  EXPECT_EQ(rate.spike_duration, absl::Milliseconds(20500));
  EXPECT_EQ(scenario->arrivals.burstiness, 0.5);
  const WorkloadSpec& workload = scenario->workload;
  EXPECT_EQ(workload.prompt_tokens.kind, LengthDistribution::Kind::kUniform);
  EXPECT_EQ(workload.prompt_tokens.minimum, 10);
  EXPECT_EQ(workload.prompt_tokens.maximum, 20);
  EXPECT_EQ(workload.output_tokens.kind, LengthDistribution::Kind::kLogNormal);
  EXPECT_EQ(workload.output_tokens.median, 300);
  EXPECT_EQ(workload.output_tokens.sigma, 0.8);
  EXPECT_EQ(workload.output_tokens.minimum, 2);
  EXPECT_EQ(workload.output_tokens.maximum, 4000);
  EXPECT_FALSE(workload.add_reflection_system_prompt);
  EXPECT_EQ(workload.temperature, 0.6);
  EXPECT_EQ(workload.sampling_seed, 5u);
  EXPECT_EQ(workload.high_priority_fraction, 0.25);
  EXPECT_EQ(workload.high_priority, -3);
  EXPECT_EQ(scenario->slo.time_to_first_token, absl::Milliseconds(1500));
  EXPECT_EQ(scenario->slo.time_to_first_output_token, absl::Seconds(30));
  EXPECT_EQ(scenario->slo.inter_token_latency_p99, absl::Milliseconds(200));
  EXPECT_EQ(scenario->slo.end_to_end, absl::Seconds(100));
  EXPECT_EQ(scenario->client_timeout, absl::Seconds(600));
}

TEST(ScenarioTest, OptionalKeysTakeTheirDefaults) {
  Json document = SpikeDocument();
  for (const char* key : {"seed", "rate_scale_note"}) document.erase(key);
  document["arrivals"] = {
      {"profile", "linear_ramp"}, {"requests_per_second", 1}, {"end_requests_per_second", 9}};
  document["workload"] = Json::object();
  document["slo"].erase("e2e_seconds");
  document["slo"].erase("time_to_first_output_token_seconds");
  absl::StatusOr<Scenario> scenario = Parse(document);
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  const WorkloadSpec defaults;
  EXPECT_EQ(scenario->seed, 1u);
  EXPECT_FALSE(scenario->max_requests.has_value());
  EXPECT_EQ(scenario->rate_scale_note, "");
  EXPECT_EQ(scenario->arrivals.rate.kind, RateProfile::Kind::kLinearRamp);
  EXPECT_EQ(scenario->arrivals.rate.end_requests_per_second, 9);
  EXPECT_EQ(scenario->arrivals.burstiness, 1.0);
  EXPECT_EQ(scenario->workload.output_tokens.median, defaults.output_tokens.median);
  EXPECT_EQ(scenario->workload.output_tokens.maximum, defaults.output_tokens.maximum);
  EXPECT_EQ(scenario->workload.prompt_tokens.median, defaults.prompt_tokens.median);
  EXPECT_TRUE(scenario->workload.add_reflection_system_prompt);
  EXPECT_FALSE(scenario->slo.end_to_end.has_value());
  EXPECT_FALSE(scenario->slo.time_to_first_output_token.has_value());
}

TEST(ScenarioTest, ClosedLoopReadsConcurrency) {
  Json document = SpikeDocument();
  document["mode"] = "closed";
  document.erase("arrivals");
  document["concurrency"] = 32;
  absl::StatusOr<Scenario> scenario = Parse(document);
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  EXPECT_EQ(scenario->mode, LoopMode::kClosed);
  EXPECT_EQ(scenario->concurrency, 32);
}

TEST(ScenarioTest, EvenSpacingIsReadAndRandomIsTheDefault) {
  Json document = SpikeDocument();
  absl::StatusOr<Scenario> scenario = Parse(document);
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  EXPECT_FALSE(scenario->arrivals.even_spacing);
  document["arrivals"].erase("burstiness");
  document["arrivals"]["spacing"] = "even";
  scenario = Parse(document);
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  EXPECT_TRUE(scenario->arrivals.even_spacing);
}

TEST(ScenarioTest, MaxRequestsIsRead) {
  Json document = SpikeDocument();
  document["max_requests"] = 250;
  absl::StatusOr<Scenario> scenario = Parse(document);
  ASSERT_TRUE(scenario.ok()) << scenario.status();
  EXPECT_EQ(scenario->max_requests, 250);
}

TEST(ScenarioTest, BadDocumentsFailNamingTheirField) {
  struct BadCase {
    std::string field;                  // must appear in the error message
    std::function<void(Json&)> change;  // applied to SpikeDocument()
  };
  const std::vector<BadCase> cases = {
      {"colour", [](Json& d) { d["colour"] = "blue"; }},
      {"name", [](Json& d) { d["name"] = ""; }},
      {"description", [](Json& d) { d.erase("description"); }},
      {"protocol", [](Json& d) { d["protocol"] = "smtp"; }},
      {"mode", [](Json& d) { d["mode"] = "half-open"; }},
      {"run_length_seconds", [](Json& d) { d["run_length_seconds"] = -5; }},
      {"run_length_seconds", [](Json& d) { d["run_length_seconds"] = "60"; }},
      {"seed", [](Json& d) { d["seed"] = -1; }},
      {"max_requests", [](Json& d) { d["max_requests"] = 0; }},
      {"max_requests", [](Json& d) { d["max_requests"] = 2.5; }},
      {"max_requests", [](Json& d) { d["max_requests"] = "100"; }},
      {"concurrency", [](Json& d) { d["concurrency"] = 4; }},
      {"concurrency",
       [](Json& d) {
         d["mode"] = "closed";
         d.erase("arrivals");
       }},
      {"concurrency",
       [](Json& d) {
         d["mode"] = "closed";
         d.erase("arrivals");
         d["concurrency"] = 0;
       }},
      {"arrivals",
       [](Json& d) {
         d["mode"] = "closed";
         d["concurrency"] = 4;
       }},
      {"arrivals.profile", [](Json& d) { d["arrivals"]["profile"] = "sawtooth"; }},
      {"arrivals.requests_per_second", [](Json& d) { d["arrivals"]["requests_per_second"] = -1; }},
      {"arrivals.burstiness", [](Json& d) { d["arrivals"]["burstiness"] = 0; }},
      {"arrivals.spacing", [](Json& d) { d["arrivals"]["spacing"] = "wavy"; }},
      {"arrivals.burstiness", [](Json& d) { d["arrivals"]["spacing"] = "even"; }},
      {"arrivals.spike_multiplier", [](Json& d) { d["arrivals"]["spike_multiplier"] = 0; }},
      {"arrivals.spike_start", [](Json& d) { d["arrivals"]["spike_start_seconds"] = 95; }},
      {"arrivals.spike_duration_seconds",
       [](Json& d) { d["arrivals"].erase("spike_duration_seconds"); }},
      {"arrivals.end_requests_per_second",
       [](Json& d) { d["arrivals"]["end_requests_per_second"] = 3; }},
      {"workload.output_tokens.kind",
       [](Json& d) { d["workload"]["output_tokens"]["kind"] = "gaussian"; }},
      {"workload.output_tokens.maximum",
       [](Json& d) { d["workload"]["output_tokens"]["maximum"] = 1; }},
      {"workload.output_tokens.median",
       [](Json& d) { d["workload"]["output_tokens"]["median"] = 0; }},
      {"workload.prompt_tokens.tokens",
       [](Json& d) {
         d["workload"]["prompt_tokens"] = {{"kind", "fixed"}, {"tokens", 1.5}};
       }},
      {"workload.prompt_tokens.sigma",
       [](Json& d) { d["workload"]["prompt_tokens"]["sigma"] = 1; }},
      {"workload.temperature", [](Json& d) { d["workload"]["temperature"] = -0.5; }},
      {"workload.high_priority_fraction",
       [](Json& d) { d["workload"]["high_priority_fraction"] = 1.5; }},
      {"workload.add_reflection_system_prompt",
       [](Json& d) { d["workload"]["add_reflection_system_prompt"] = "yes"; }},
      {"slo.ttft_seconds", [](Json& d) { d["slo"].erase("ttft_seconds"); }},
      {"slo.inter_token_latency_seconds",
       [](Json& d) { d["slo"]["inter_token_latency_seconds"] = 0; }},
      {"slo.e2e_seconds", [](Json& d) { d["slo"]["e2e_seconds"] = nullptr; }},
      {"client_timeout_seconds", [](Json& d) { d.erase("client_timeout_seconds"); }},
      {"workload", [](Json& d) { d["workload"] = 3; }},
  };
  for (const BadCase& bad : cases) {
    Json document = SpikeDocument();
    bad.change(document);
    SCOPED_TRACE(document.dump());
    const absl::Status status = Parse(document).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_NE(status.message().find(bad.field), absl::string_view::npos)
        << "want '" << bad.field << "' in: " << status;
  }
}

TEST(ScenarioTest, NotJsonOrNotAnObjectIsRefused) {
  EXPECT_TRUE(absl::IsInvalidArgument(ParseScenario("{\"name\": ", "broken.json").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseScenario("[1, 2]", "list.json").status()));
}

TEST(ScenarioTest, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(LoadScenario(kScenarioDirectory / "no-such.json").status()));
}

}  // namespace
}  // namespace reflect::loadtest
