// Runs one load test (issue #6): plans the scenario's requests, sends them with a LoadClient on
// schedule, scrapes the server meanwhile, and waits for every answer.
//
// Open loop: request i goes out at run_start + send_at[i], from one scheduler thread that only
// sleeps and sends (never waits for answers), however late it falls; how late each send was is
// reported. Closed loop: `concurrency` requests are kept in flight, the next one sent as soon as
// one ends, until the run length has passed; requests not sent by then are not part of the run.
// With the scenario's max_requests, either loop also stops sending once that many are sent (an
// open loop sends the first max_requests of its plan).
// Then every sent request is waited for up to the client timeout (each request carries that
// deadline, so all should be answered by then) plus a grace period; one still unanswered after
// that is counted in `unanswered` and has no record.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loadtest/load_client.h"
#include "loadtest/load_types.h"
#include "loadtest/metrics_sampler.h"
#include "loadtest/scenario.h"

namespace reflect::loadtest {

// How late an open loop's sends were against their planned times.
struct SendLateness {
  int64_t sends = 0;
  absl::Duration p50 = absl::ZeroDuration();
  absl::Duration p99 = absl::ZeroDuration();
  absl::Duration max = absl::ZeroDuration();
};

struct RunResult {
  absl::Time start_wall_time = absl::UnixEpoch();
  int64_t sent = 0;  // open loop: every planned request
  // How long the run sent requests for: the run length, or the time of the last send when
  // max_requests ended the sending before it.
  absl::Duration sending_window = absl::ZeroDuration();
  int64_t unanswered = 0;              // sent, but no record within the drain bound
  std::vector<RequestRecord> records;  // one per answered request, by index
  std::vector<ServerSample> samples;
  int64_t sampler_failures = 0;
  std::string sampler_last_error;
  std::optional<SendLateness> lateness;  // open loop only
};

struct RunDriverOptions {
  // Where to scrape /metrics; no sampling when its router_address is empty.
  MetricsSamplerOptions sampler;
  // Added to the scenario's client timeout when waiting for the last answers.
  absl::Duration drain_grace = absl::Seconds(10);
  // When the run starts (its time zero); empty: at once. Lets several load generators start
  // together, or in a chosen phase with one another.
  std::optional<absl::Time> start_at;
};

// Thread-compatible; `client` must outlive the driver.
class RunDriver {
 public:
  RunDriver(LoadClient& client, RunDriverOptions options)
      : client_(client), options_(std::move(options)) {}

  // Runs `scenario` as is (overrides such as rate scaling are the caller's). Fails, before
  // sending anything, with the planning errors of ArrivalTimes, PlanRequests and
  // RequestGenerator::Create, or FailedPrecondition when options' start_at has passed.
  absl::StatusOr<RunResult> Run(const Scenario& scenario);

 private:
  LoadClient& client_;
  const RunDriverOptions options_;
};

}  // namespace reflect::loadtest
