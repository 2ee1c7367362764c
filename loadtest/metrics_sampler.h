// Server figures during a load test (issue #6): a thread that scrapes the router's /metrics once
// per interval into ServerSamples. The router exports the queue (reflect_num_requests_waiting)
// and what runs (reflect_num_requests_running); KV cache usage (reflect_kv_cache_usage_ratio) is
// taken from the router when it has it, else averaged over the replicas' own /metrics endpoints.
// A scrape is plain HTTP/1.1 GET with a deadline; one that fails is skipped and counted, never
// fatal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/load_types.h"

namespace reflect::loadtest {

// The body of GET http://<address><target> ("host:port", "/metrics"). UNAVAILABLE when the host
// does not resolve, the connection or exchange fails or `timeout` passes (counted from the call);
// UNAVAILABLE naming the status when it is not 200.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& target,
                                    absl::Duration timeout);

// The sum of every series named exactly `name` in a Prometheus text exposition (comments and
// other families ignored; labels may hold any quoted text); nullopt when there is none.
std::optional<double> PrometheusValue(std::string_view text, std::string_view name);

struct MetricsSamplerOptions {
  std::string router_address;                  // "host:port" of the router's HTTP port
  std::vector<std::string> replica_addresses;  // replicas' metrics ports, for KV usage; optional
  absl::Duration interval = absl::Seconds(1);  // > 0
  absl::Duration scrape_timeout = absl::Seconds(1);  // per GET
};

// Scrapes at run_start, run_start + interval, … until Stop. A sample needs the router's scrape;
// its KV usage is the router's figure, else the mean of the replicas that answered (0 when none
// did). Every failed GET (router or replica) counts as a failure; a failed router GET also skips
// the sample. Thread-safety: all methods may be called from any thread. The destructor stops.
class MetricsSampler {
 public:
  MetricsSampler(MetricsSamplerOptions options, absl::Time run_start);
  ~MetricsSampler();
  MetricsSampler(const MetricsSampler&) = delete;
  MetricsSampler& operator=(const MetricsSampler&) = delete;

  // Ends the thread after the scrape in progress, if any. Idempotent.
  void Stop();

  std::vector<ServerSample> samples() const;  // in time order
  int64_t failures() const;
  std::string last_error() const;  // empty when nothing failed

 private:
  void Loop();
  // One scrape of everything; nullopt when the router's failed.
  std::optional<ServerSample> Scrape();
  void RecordFailure(const absl::Status& status);

  const MetricsSamplerOptions options_;
  const absl::Time run_start_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;              // guarded by mutex_
  std::vector<ServerSample> samples_;  // guarded by mutex_
  int64_t failures_ = 0;               // guarded by mutex_
  std::string last_error_;             // guarded by mutex_
  std::thread thread_;                 // last: starts once everything above is ready
};

}  // namespace reflect::loadtest
