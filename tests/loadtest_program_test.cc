// reflect-loadtest as a user runs it: the real program against a real one-replica cluster on
// loopback, over gRPC and HTTP, open and closed loop, checking the JSON and HTML reports it
// writes; and its exit codes for a bad scenario path, an unknown flag and an unreachable target.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"
#include "tests/support/serving_cluster.h"

namespace reflect {
namespace {

using nlohmann::json;

constexpr int kOutputTokens = 8;

std::string LoadtestBinary() {
  return std::string(REFLECT_BINARY_DIR) + "/loadtest/reflect-loadtest";
}

// A small scenario: fixed 16-token prompts and 8-token outputs; open loop at 5 req/s Poisson for
// 4 s, or closed loop with 4 in flight for 3 s.
json ScenarioDocument(const std::string& protocol, bool open_loop) {
  json scenario = {{"name", open_loop ? "test-open" : "test-closed"},
                   {"description", "A small load for the program's test."},
                   {"protocol", protocol},
                   {"mode", open_loop ? "open" : "closed"},
                   {"run_length_seconds", open_loop ? 4 : 3},
                   {"seed", 7},
                   {"workload",
                    {{"prompt_tokens", {{"kind", "fixed"}, {"tokens", 16}}},
                     {"output_tokens", {{"kind", "fixed"}, {"tokens", kOutputTokens}}}}},
                   {"slo", {{"ttft_seconds", 5}, {"inter_token_latency_seconds", 1}}},
                   {"client_timeout_seconds", 60}};
  if (open_loop) {
    scenario["arrivals"] = {{"profile", "constant"}, {"requests_per_second", 5}, {"burstiness", 1}};
  } else {
    scenario["concurrency"] = 4;
  }
  return scenario;
}

std::string WriteFile(const std::filesystem::path& path, const std::string& contents) {
  std::ofstream(path) << contents;
  return path.string();
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// A loopback port nothing listens on (bound, then released).
std::string ClosedAddress() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
}

class LoadtestProgramTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::ServingClusterOptions options;
    options.worker_flags = {"--max_num_seqs", "64"};
    cluster_ = new testing::ServingCluster(options);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(cluster_->ready());
    directory_ = testing::MakeTestDirectory("loadtest_program");
  }

  // Runs reflect-loadtest on `scenario` with `flags`, writing the reports into the directory.
  testing::ProcessResult Run(const json& scenario, std::vector<std::string> flags) {
    std::vector<std::string> arguments = {LoadtestBinary(),
                                          "--scenario",
                                          WriteFile(directory_ / "scenario.json", scenario.dump()),
                                          "--json_out",
                                          (directory_ / "report.json").string(),
                                          "--html_out",
                                          (directory_ / "report.html").string()};
    arguments.insert(arguments.end(), flags.begin(), flags.end());
    return testing::RunProcess(arguments);
  }

  json Report() { return json::parse(ReadFile(directory_ / "report.json")); }

  static testing::ServingCluster* cluster_;
  std::filesystem::path directory_;
};

testing::ServingCluster* LoadtestProgramTest::cluster_ = nullptr;

// Every planned request answered ok with the asked-for output, and both reports written.
void ExpectCompleteOpenLoopRun(const json& report, const std::string& html) {
  const json& outcomes = report["outcomes"];
  const int64_t planned = report["run"]["planned_requests"];
  EXPECT_GT(planned, 5);
  EXPECT_EQ(outcomes["recorded"], planned);
  EXPECT_EQ(outcomes["ok"], planned);
  EXPECT_EQ(outcomes["lost"], 0);
  EXPECT_EQ(report["unanswered"], 0);
  const double output_tokens = report["throughput"]["output_tokens_per_second"].get<double>() *
                               report["throughput"]["duration_seconds"].get<double>();
  EXPECT_NEAR(output_tokens / planned, kOutputTokens, 1e-6);
  EXPECT_GT(report["latency"]["time_to_first_token"]["p50_seconds"].get<double>(), 0);
  EXPECT_EQ(report["send_lateness"]["sends"], planned);
  EXPECT_GE(report["server_samples"]["taken"].get<int>(), 2);
  EXPECT_EQ(report["scenario"]["document"]["name"], "test-open");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

TEST_F(LoadtestProgramTest, OpenLoopOverGrpc) {
  const testing::ProcessResult result =
      Run(ScenarioDocument("grpc", true),
          {"--target", cluster_->grpc_address(), "--metrics_target", cluster_->http_address(),
           "--replica_metrics", cluster_->replica_metrics_address(0)});
  ASSERT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
  EXPECT_NE(result.standard_output.find("TTFT p50"), std::string::npos);
  const json report = Report();
  EXPECT_EQ(report["run"]["protocol"], "grpc");
  EXPECT_EQ(report["server_samples"]["failures"], 0);
  ExpectCompleteOpenLoopRun(report, ReadFile(directory_ / "report.html"));
}

TEST_F(LoadtestProgramTest, OpenLoopOverHttp) {
  const testing::ProcessResult result =
      Run(ScenarioDocument("http", true), {"--http_target", cluster_->http_address()});
  ASSERT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
  const json report = Report();
  EXPECT_EQ(report["run"]["protocol"], "http");
  ExpectCompleteOpenLoopRun(report, ReadFile(directory_ / "report.html"));
}

TEST_F(LoadtestProgramTest, ClosedLoopCompletes) {
  const testing::ProcessResult result =
      Run(ScenarioDocument("grpc", false),
          {"--target", cluster_->grpc_address(), "--metrics_target", cluster_->http_address()});
  ASSERT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
  const json report = Report();
  EXPECT_GE(report["outcomes"]["ok"].get<int>(), 4);
  EXPECT_EQ(report["outcomes"]["ok"], report["run"]["planned_requests"]);
  EXPECT_EQ(report["outcomes"]["lost"], 0);
  EXPECT_TRUE(report["send_lateness"].is_null());
  EXPECT_EQ(report["scenario"]["concurrency"], 4);
}

// A fixed-count run: it stops sending at max_requests long before its 60 s run length, and its
// rates divide by the time to the last answer, not by the run length.
TEST_F(LoadtestProgramTest, MaxRequestsEndsEitherLoopAtTheCount) {
  for (const bool open_loop : {true, false}) {
    SCOPED_TRACE(open_loop ? "open loop" : "closed loop");
    json scenario = ScenarioDocument("grpc", open_loop);
    scenario["run_length_seconds"] = 60;
    const testing::ProcessResult result =
        Run(scenario, {"--target", cluster_->grpc_address(), "--max_requests", "6"});
    ASSERT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
    const json report = Report();
    EXPECT_EQ(report["run"]["planned_requests"], 6);
    EXPECT_EQ(report["outcomes"]["ok"], 6);
    EXPECT_EQ(report["scenario"]["max_requests"], 6);
    const double sending = report["run"]["run_length_seconds"];
    const double duration = report["throughput"]["duration_seconds"];
    EXPECT_LT(sending, 30);  // open loop: the 6th send is due at 1 s (5 req/s)
    EXPECT_LT(duration, 30);
    EXPECT_GE(duration, sending);
    EXPECT_NEAR(report["throughput"]["output_tokens_per_second"].get<double>() * duration,
                6 * kOutputTokens, 1e-6);
  }
}

// --start_at: the run's time zero is the given Unix time, not the program's start; a time that
// has passed is refused with exit code 2 before anything is sent.
TEST_F(LoadtestProgramTest, StartAtSetsTheRunsTimeZero) {
  const absl::Time start_at = absl::Now() + absl::Seconds(3);
  const std::string start_flag =
      absl::StrFormat("%.6f", absl::ToDoubleSeconds(start_at - absl::UnixEpoch()));
  testing::ProcessResult result =
      Run(ScenarioDocument("grpc", false),
          {"--target", cluster_->grpc_address(), "--max_requests", "2", "--start_at", start_flag});
  ASSERT_EQ(result.exit_code, 0) << result.standard_error << result.standard_output;
  absl::Time reported_start;
  std::string error;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, Report()["run"]["start_time"].get<std::string>(),
                              &reported_start, &error))
      << error;
  EXPECT_LT(absl::AbsDuration(reported_start - start_at), absl::Milliseconds(1));
  EXPECT_GE(absl::Now(), start_at);

  result = Run(ScenarioDocument("grpc", false),
               {"--target", cluster_->grpc_address(), "--start_at", "1000000000"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.standard_error.find("start time passed"), std::string::npos)
      << result.standard_error;
}

TEST(LoadtestProgramErrorsTest, MissingScenarioFileExitsTwoNamingIt) {
  const std::string path =
      (testing::MakeTestDirectory("loadtest_program") / "no-such-scenario.json").string();
  const testing::ProcessResult result =
      testing::RunProcess({LoadtestBinary(), "--scenario", path, "--target", "127.0.0.1:1"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.standard_error.find(path), std::string::npos) << result.standard_error;
}

TEST(LoadtestProgramErrorsTest, UnknownFlagExitsTwo) {
  const testing::ProcessResult result =
      testing::RunProcess({LoadtestBinary(), "--scenario", "x.json", "--rate-scael", "2"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.standard_error.find("unknown flag --rate_scael"), std::string::npos)
      << result.standard_error;
}

TEST(LoadtestProgramErrorsTest, UnreachableTargetExitsOneSayingSo) {
  const std::filesystem::path directory = testing::MakeTestDirectory("loadtest_program");
  for (const std::string protocol : {"grpc", "http"}) {
    const std::string address = ClosedAddress();
    const testing::ProcessResult result = testing::RunProcess(
        {LoadtestBinary(), "--scenario",
         WriteFile(directory / (protocol + ".json"), ScenarioDocument(protocol, true).dump()),
         "--target", address});
    EXPECT_EQ(result.exit_code, 1) << protocol;
    EXPECT_NE(result.standard_error.find("target " + address), std::string::npos)
        << result.standard_error;
    EXPECT_NE(result.standard_error.find("did not answer"), std::string::npos)
        << result.standard_error;
  }
}

}  // namespace
}  // namespace reflect
