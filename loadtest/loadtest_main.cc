// reflect-loadtest (issue #6): runs one scenario file against a reflect-router and reports.
//
//   reflect-loadtest --scenario loadtest/scenarios/steady.json --target localhost:50051
//       --metrics_target localhost:8000 --json_out steady.json --html_out steady.html
//   (one command line)
//
// The target is the router's gRPC or HTTP port, whichever the scenario's protocol needs
// (--target, or --grpc_target / --http_target); /metrics is scraped from --metrics_target
// (default: the HTTP target). Before the run one small request checks that the target answers.
// Prints a summary on stdout; writes the report as JSON (report.h's fields plus "scenario",
// "send_lateness", "server_samples" and "unanswered") and as HTML.
//
// Exit codes: 0 the run completed; 1 the target did not answer, a request went unanswered or a
// report could not be written; 2 bad flags or scenario (the message names the problem).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/command_line.h"
#include "loadtest/grpc_load_client.h"
#include "loadtest/http_load_client.h"
#include "loadtest/report.h"
#include "loadtest/report_html.h"
#include "loadtest/run_driver.h"
#include "loadtest/scenario.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, scenario, "", "Scenario file (JSON; see loadtest/scenarios/)");
ABSL_FLAG(std::string, target, "",
          "Router host:port for the scenario's protocol (its gRPC or its HTTP port)");
ABSL_FLAG(std::string, grpc_target, "", "Router gRPC host:port, used when --target is empty");
ABSL_FLAG(std::string, http_target, "", "Router HTTP host:port, used when --target is empty");
ABSL_FLAG(std::string, metrics_target, "",
          "Router HTTP host:port to scrape /metrics from; default: the HTTP target");
ABSL_FLAG(std::string, replica_metrics, "",
          "Replicas' metrics host:port,... for KV cache usage when the router has none");
ABSL_FLAG(double, rate_scale, 1.0, "Multiplies every arrival rate of an open-loop scenario");
ABSL_FLAG(double, run_length_seconds, 0, "Overrides the scenario's run length when > 0");
ABSL_FLAG(int32_t, concurrency, 0, "Overrides a closed-loop scenario's concurrency when > 0");
ABSL_FLAG(int64_t, max_requests, 0, "Overrides the scenario's max_requests when > 0");
ABSL_FLAG(double, start_at, 0,
          "Unix time (seconds) to start the run at, after the probe request; 0: at once. Exit 2 "
          "when it has passed by then");
ABSL_FLAG(std::string, api_key, "", "API key; default: $REFLECT_API_KEY");
ABSL_FLAG(std::string, model, "", "Model name to ask for; empty: the server's default");
ABSL_FLAG(std::string, json_out, "", "Where to write the JSON report; empty: nowhere");
ABSL_FLAG(std::string, html_out, "", "Where to write the HTML report; empty: nowhere");
ABSL_FLAG(int32_t, connections, 8, "gRPC channels (HTTP/2 connections) to spread streams over");
ABSL_FLAG(int32_t, threads, 2, "Client threads for network I/O and measurement");

namespace reflect::loadtest {
namespace {

constexpr char kProgram[] = "reflect-loadtest";
constexpr absl::Duration kProbeTimeout = absl::Seconds(30);

// Prints `message` on stderr and returns `exit_code`.
int Fail(int exit_code, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return exit_code;
}

// Checks every flag argument before absl parses them, so that an unknown flag or a bad value
// exits with 2 and a message instead of absl's exit 1.
absl::Status CheckFlagArguments(const std::vector<char*>& arguments) {
  for (size_t i = 1; i < arguments.size(); ++i) {
    absl::string_view argument = arguments[i];
    if (argument == "--") break;
    if (!absl::StartsWith(argument, "-")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument ", argument));
    }
    argument.remove_prefix(absl::StartsWith(argument, "--") ? 2 : 1);
    const size_t equals = argument.find('=');
    const std::string name(argument.substr(0, equals));
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && name.starts_with("no") && equals == absl::string_view::npos) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) continue;
      flag = nullptr;
    }
    if (flag == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (flag->IsOfType<bool>() && equals == absl::string_view::npos) continue;
    std::string value;
    if (equals != absl::string_view::npos) {
      value = std::string(argument.substr(equals + 1));
    } else if (i + 1 < arguments.size()) {
      value = arguments[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

// Thousands of HTTP streams need a socket each.
void RaiseOpenFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    std::fprintf(stderr, "%s: warning: cannot raise the open file limit\n", kProgram);
  }
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// The scenario file with the flags' overrides applied, or a failure with exit code 2.
absl::StatusOr<Scenario> ScenarioFromFlags(const std::string& path, const std::string& text) {
  absl::StatusOr<Scenario> scenario = ParseScenario(text, path);
  if (!scenario.ok()) return scenario.status();
  const double rate_scale = absl::GetFlag(FLAGS_rate_scale);
  if (!(rate_scale > 0) || !std::isfinite(rate_scale)) {
    return absl::InvalidArgumentError("--rate_scale must be a positive number");
  }
  scenario->arrivals.rate = ScaleRates(scenario->arrivals.rate, rate_scale);
  const double run_length_seconds = absl::GetFlag(FLAGS_run_length_seconds);
  if (run_length_seconds < 0 || !std::isfinite(run_length_seconds)) {
    return absl::InvalidArgumentError("--run_length_seconds must be a positive number");
  }
  if (run_length_seconds > 0) scenario->run_length = absl::Seconds(run_length_seconds);
  const int32_t concurrency = absl::GetFlag(FLAGS_concurrency);
  if (concurrency < 0 || (concurrency > 0 && scenario->mode != LoopMode::kClosed)) {
    return absl::InvalidArgumentError(
        "--concurrency must be positive and applies to closed-loop scenarios only");
  }
  if (concurrency > 0) scenario->concurrency = concurrency;
  const int64_t max_requests = absl::GetFlag(FLAGS_max_requests);
  if (max_requests < 0) return absl::InvalidArgumentError("--max_requests must be positive");
  if (max_requests > 0) scenario->max_requests = max_requests;
  if (scenario->mode == LoopMode::kOpen) {
    absl::StatusOr<RateSchedule> schedule =
        RateSchedule::Create(scenario->arrivals.rate, scenario->run_length);
    if (!schedule.ok()) return schedule.status();
  }
  return scenario;
}

absl::StatusOr<std::unique_ptr<LoadClient>> MakeClient(Protocol protocol,
                                                       const LoadClientOptions& options) {
  if (protocol == Protocol::kGrpc) {
    absl::StatusOr<std::unique_ptr<GrpcLoadClient>> client = GrpcLoadClient::Create(options);
    if (!client.ok()) return client.status();
    return std::unique_ptr<LoadClient>(*std::move(client));
  }
  absl::StatusOr<std::unique_ptr<HttpLoadClient>> client = HttpLoadClient::Create(options);
  if (!client.ok()) return client.status();
  return std::unique_ptr<LoadClient>(*std::move(client));
}

// One one-token request on a client of its own: the target answers (a rejection counts: the
// server is there, only busy), or the reason it does not.
absl::Status ProbeTarget(Protocol protocol, LoadClientOptions options) {
  options.request_timeout = std::min(options.request_timeout, kProbeTimeout);
  absl::StatusOr<std::unique_ptr<LoadClient>> client = MakeClient(protocol, options);
  if (!client.ok()) return client.status();
  PlannedRequest probe;
  probe.index = -1;
  probe.add_reflection_system_prompt = false;
  probe.user_message = "Hello";
  probe.max_tokens = 1;
  RequestRecord record;
  (*client)->Send(probe, absl::Now(), [&record](RequestRecord done) { record = std::move(done); });
  (*client)->Drain();
  if (record.outcome == RequestOutcome::kOk || record.outcome == RequestOutcome::kRejected) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(record.error);
}

std::string MachineDescription() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ", ", std::thread::hardware_concurrency(), " CPUs");
}

SloTargets SloOf(const ServiceLevelObjectives& slo) {
  SloTargets targets;
  targets.ttft = slo.time_to_first_token;
  targets.time_to_first_output_token = slo.time_to_first_output_token;
  if (slo.inter_token_latency_p99 > absl::ZeroDuration()) {
    targets.inter_token_latency_p99 = slo.inter_token_latency_p99;
  }
  targets.end_to_end = slo.end_to_end;
  return targets;
}

std::string Milliseconds(const std::optional<absl::Duration>& duration) {
  if (!duration) return "-";
  return absl::StrFormat("%.1f ms", absl::ToDoubleMilliseconds(*duration));
}

void PrintSummary(const LoadReport& report, const RunResult& result) {
  const OutcomeCounts& outcomes = report.outcomes;
  const Throughput& throughput = report.throughput;
  std::printf("%s: %s over %s, %.1f s\n", kProgram, report.run.scenario_name.c_str(),
              report.run.protocol.c_str(), absl::ToDoubleSeconds(report.run.run_length));
  std::printf("requests: %lld sent, %lld ok, %lld rejected, %lld error, %lld timeout, %lld lost\n",
              static_cast<long long>(result.sent), static_cast<long long>(outcomes.ok),
              static_cast<long long>(outcomes.rejected), static_cast<long long>(outcomes.error),
              static_cast<long long>(outcomes.timeout),
              static_cast<long long>(outcomes.lost.value_or(0)));
  std::printf("TTFT p50 %s, p99 %s; rejection latency p99 %s\n",
              Milliseconds(report.latency.time_to_first_token.p50).c_str(),
              Milliseconds(report.latency.time_to_first_token.p99).c_str(),
              Milliseconds(report.latency.rejection_latency.p99).c_str());
  std::printf(
      "throughput: %.2f req/s, %.1f output tok/s; goodput %.2f req/s (%.0f%% of ok met SLO)\n",
      throughput.ok_requests_per_second, throughput.output_tokens_per_second,
      throughput.goodput_requests_per_second, 100 * throughput.fraction_of_ok_meeting_slo);
  if (result.lateness) {
    std::printf(
        "send lateness: p50 %s, p99 %s, max %s\n", Milliseconds(result.lateness->p50).c_str(),
        Milliseconds(result.lateness->p99).c_str(), Milliseconds(result.lateness->max).c_str());
  }
  std::string scrapes = absl::StrCat("server samples: ", result.samples.size(), ", ",
                                     result.sampler_failures, " failed scrapes");
  if (!result.sampler_last_error.empty()) {
    absl::StrAppend(&scrapes, " (last: ", result.sampler_last_error, ")");
  }
  std::printf("%s\n", scrapes.c_str());
}

nlohmann::json ReportJson(const LoadReport& report, const RunResult& result,
                          const Scenario& scenario, const std::string& scenario_path,
                          const std::string& scenario_text) {
  nlohmann::json json = ToJson(report);
  json["scenario"] = {
      {"file", scenario_path},
      {"document", nlohmann::json::parse(scenario_text)},
      {"rate_scale", absl::GetFlag(FLAGS_rate_scale)},
      {"run_length_seconds", absl::ToDoubleSeconds(scenario.run_length)},
      {"max_requests", scenario.max_requests.has_value() ? nlohmann::json(*scenario.max_requests)
                                                         : nlohmann::json(nullptr)},
      {"concurrency", scenario.mode == LoopMode::kClosed ? nlohmann::json(scenario.concurrency)
                                                         : nlohmann::json(nullptr)}};
  json["send_lateness"] = nullptr;
  if (result.lateness) {
    json["send_lateness"] = {{"sends", result.lateness->sends},
                             {"p50_seconds", absl::ToDoubleSeconds(result.lateness->p50)},
                             {"p99_seconds", absl::ToDoubleSeconds(result.lateness->p99)},
                             {"max_seconds", absl::ToDoubleSeconds(result.lateness->max)}};
  }
  json["server_samples"] = {{"taken", result.samples.size()},
                            {"failures", result.sampler_failures},
                            {"last_error", result.sampler_last_error}};
  json["unanswered"] = result.unanswered;
  return json;
}

bool WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  file.close();
  return static_cast<bool>(file);
}

int Main(const std::string& command_line) {
  RaiseOpenFileLimit();
  const std::string scenario_path = absl::GetFlag(FLAGS_scenario);
  if (scenario_path.empty()) return Fail(2, "--scenario FILE is required");
  const std::optional<std::string> scenario_text = ReadFile(scenario_path);
  if (!scenario_text) return Fail(2, absl::StrCat("cannot read scenario file ", scenario_path));
  absl::StatusOr<Scenario> scenario = ScenarioFromFlags(scenario_path, *scenario_text);
  if (!scenario.ok()) return Fail(2, std::string(scenario.status().message()));

  const bool grpc = scenario->protocol == Protocol::kGrpc;
  const char* protocol_name = grpc ? "grpc" : "http";
  std::string target = absl::GetFlag(FLAGS_target);
  if (target.empty()) target = absl::GetFlag(grpc ? FLAGS_grpc_target : FLAGS_http_target);
  if (target.empty()) {
    return Fail(2, absl::StrCat("scenario ", scenario->name, " speaks ", protocol_name,
                                ": pass --target or --", protocol_name, "_target"));
  }
  std::string metrics_target = absl::GetFlag(FLAGS_metrics_target);
  if (metrics_target.empty()) metrics_target = absl::GetFlag(FLAGS_http_target);
  if (metrics_target.empty() && !grpc) metrics_target = target;
  if (metrics_target.empty()) {
    std::fprintf(stderr, "%s: warning: no --metrics_target, the report has no server figures\n",
                 kProgram);
  }

  LoadClientOptions client_options;
  client_options.address = target;
  client_options.api_key = absl::GetFlag(FLAGS_api_key);
  if (client_options.api_key.empty() && std::getenv("REFLECT_API_KEY") != nullptr) {
    client_options.api_key = std::getenv("REFLECT_API_KEY");
  }
  client_options.model = absl::GetFlag(FLAGS_model);
  client_options.request_timeout = scenario->client_timeout;
  client_options.connections = absl::GetFlag(FLAGS_connections);
  client_options.threads = absl::GetFlag(FLAGS_threads);
  if (client_options.connections < 1 || client_options.threads < 1) {
    return Fail(2, "--connections and --threads must be at least 1");
  }

  if (absl::Status ready = ProbeTarget(scenario->protocol, client_options); !ready.ok()) {
    return Fail(1, absl::StrCat("target ", target, " (", protocol_name,
                                ") did not answer a probe request: ", ready.message()));
  }
  absl::StatusOr<std::unique_ptr<LoadClient>> client =
      MakeClient(scenario->protocol, client_options);
  if (!client.ok()) return Fail(1, std::string(client.status().message()));

  RunDriverOptions driver_options;
  driver_options.sampler.router_address = metrics_target;
  driver_options.sampler.replica_addresses =
      absl::StrSplit(absl::GetFlag(FLAGS_replica_metrics), ',', absl::SkipEmpty());
  const double start_at = absl::GetFlag(FLAGS_start_at);
  if (start_at < 0 || !std::isfinite(start_at)) {
    return Fail(2, "--start_at must be a Unix time in seconds");
  }
  if (start_at > 0) driver_options.start_at = absl::FromUnixSeconds(0) + absl::Seconds(start_at);
  RunDriver driver(**client, driver_options);
  absl::StatusOr<RunResult> result = driver.Run(*scenario);
  if (!result.ok()) return Fail(2, std::string(result.status().message()));

  RunInfo run;
  run.scenario_name = scenario->name;
  run.command_line = command_line;
  run.protocol = protocol_name;
  run.start_wall_time = result->start_wall_time;
  run.run_length = result->sending_window;
  run.machine_description = MachineDescription();
  run.planned_requests = result->sent;
  const LoadReport report = Summarize(run, result->records, result->samples, SloOf(scenario->slo));
  PrintSummary(report, *result);

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  const std::string json =
      ReportJson(report, *result, *scenario, scenario_path, *scenario_text).dump(2) + "\n";
  if (!json_out.empty() && !WriteFile(json_out, json)) {
    return Fail(1, absl::StrCat("cannot write ", json_out));
  }
  const std::string html_out = absl::GetFlag(FLAGS_html_out);
  if (!html_out.empty() && !WriteFile(html_out, ToHtml(report))) {
    return Fail(1, absl::StrCat("cannot write ", html_out));
  }
  if (result->unanswered > 0) {
    return Fail(1, absl::StrCat(result->unanswered, " requests got no answer within the client ",
                                "timeout; the report counts them as lost"));
  }
  return 0;
}

}  // namespace
}  // namespace reflect::loadtest

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "reflect-loadtest --scenario FILE --target HOST:PORT [--metrics_target HOST:PORT] "
      "[--json_out FILE] [--html_out FILE]");
  std::vector<char*> arguments(argv, argv + argc);
  std::vector<std::string> normalized_storage;
  reflect::NormalizeFlagNames(arguments, normalized_storage);
  const std::string command_line = absl::StrJoin(arguments, " ");
  if (absl::Status flags = reflect::loadtest::CheckFlagArguments(arguments); !flags.ok()) {
    return reflect::loadtest::Fail(2, std::string(flags.message()));
  }
  absl::ParseCommandLine(static_cast<int>(arguments.size()), arguments.data());
  return reflect::loadtest::Main(command_line);
}
