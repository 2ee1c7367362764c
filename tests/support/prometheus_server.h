// Prometheus for tests: a parser of the text exposition format (what a /metrics scrape returns)
// and a real Prometheus server (Debian's `prometheus` package, installed by
// tools/install-deps.sh) run as a child process that scrapes given targets, with instant PromQL
// queries over its HTTP API.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tests/support/child_process.h"

namespace reflect::testing {

// One line of a scrape: `name{label="value",…} value`.
struct MetricSample {
  std::string name;  // as written, with a histogram's _bucket / _sum / _count suffix
  std::map<std::string, std::string> labels;
  double value = 0.0;
};

// A whole scrape.
struct ParsedMetrics {
  std::map<std::string, std::string> types;  // family name → "counter", "gauge", "histogram", …
  std::map<std::string, std::string> help;   // family name → help text
  std::vector<MetricSample> samples;         // in the order written

  // The samples named `name` whose labels include every pair of `labels`.
  std::vector<MetricSample> Find(std::string_view name,
                                 const std::map<std::string, std::string>& labels = {}) const;
  // The value of the only sample Find returns; nullopt when there is none or more than one.
  std::optional<double> Value(std::string_view name,
                              const std::map<std::string, std::string>& labels = {}) const;
};

// Parses the Prometheus text format 0.0.4 strictly: a malformed line is INVALID_ARGUMENT naming
// it, so a test fails on output a Prometheus server would reject.
absl::StatusOr<ParsedMetrics> ParsePrometheusText(std::string_view text);

// GET http://<address>/metrics, parsed. UNAVAILABLE when there is no 200 answer.
absl::StatusOr<ParsedMetrics> ScrapeMetrics(const std::string& address,
                                            absl::Duration timeout = absl::Seconds(10));

// Where the Prometheus server binary is: $REFLECT_PROMETHEUS when set, else /usr/bin/prometheus.
std::filesystem::path PrometheusBinary();

struct PrometheusServerOptions {
  std::vector<std::string> targets;  // "host:port" of servers of /metrics, at least one
  std::string job_name = "reflect";
  absl::Duration scrape_interval = absl::Seconds(1);
  absl::Duration ready_timeout = absl::Seconds(60);
};

// PrometheusServer: /usr/bin/prometheus with a generated config (one job scraping the targets),
// its own TSDB and config under a MakeTestDirectory folder, and its web API on 127.0.0.1 at a
// free port. Ownership: SIGKILLs and reaps the process when destroyed. Thread-safety: none.
class PrometheusServer {
 public:
  // Starts the server and waits until /-/ready answers 200. FAILED_PRECONDITION (saying to run
  // tools/install-deps.sh) when the binary is missing; UNAVAILABLE when it never got ready.
  static absl::StatusOr<std::unique_ptr<PrometheusServer>> Start(
      const PrometheusServerOptions& options);

  // "127.0.0.1:<port>" of the web API.
  const std::string& address() const { return address_; }

  // An instant query (GET /api/v1/query). Returns the reply's "data" object
  // ({"resultType": …, "result": …}); an error when the server answers status "error".
  absl::StatusOr<nlohmann::json> Query(const std::string& promql);

  // Repeats Query until its result is a non-empty vector or `timeout` passes (scrapes take a
  // scrape interval or two to land); DEADLINE_EXCEEDED with the last reply when it stays empty.
  absl::StatusOr<nlohmann::json> WaitForResult(const std::string& promql,
                                               absl::Duration timeout = absl::Seconds(30));

  // The scrape targets and their health (GET /api/v1/targets "data" object), for diagnostics.
  absl::StatusOr<nlohmann::json> Targets();

 private:
  PrometheusServer(std::unique_ptr<ChildProcess> process, std::string address);
  absl::StatusOr<nlohmann::json> GetData(const std::string& path_and_query);

  std::unique_ptr<ChildProcess> process_;
  std::string address_;
};

// The numbers of an instant-vector result ("data" of Query), in result order.
std::vector<double> VectorValues(const nlohmann::json& data);

}  // namespace reflect::testing
