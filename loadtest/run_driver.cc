#include "loadtest/run_driver.h"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "loadtest/arrivals.h"
#include "loadtest/report.h"
#include "loadtest/workload.h"

namespace reflect::loadtest {
namespace {

// What the clients' callbacks hand back. Shared with them, so a callback that comes after the
// run has given up waiting still has somewhere to write.
struct Collector {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<RequestRecord> records;  // guarded by mutex
  int64_t in_flight = 0;               // guarded by mutex
};

SendLateness SummarizeLateness(std::vector<absl::Duration> lateness) {
  SendLateness summary;
  summary.sends = static_cast<int64_t>(lateness.size());
  summary.p50 = NearestRankPercentile(lateness, 50).value_or(absl::ZeroDuration());
  summary.p99 = NearestRankPercentile(lateness, 99).value_or(absl::ZeroDuration());
  summary.max = NearestRankPercentile(lateness, 100).value_or(absl::ZeroDuration());
  return summary;
}

}  // namespace

absl::StatusOr<RunResult> RunDriver::Run(const Scenario& scenario) {
  std::vector<PlannedRequest> plan;
  std::optional<RequestGenerator> generator;
  if (scenario.mode == LoopMode::kOpen) {
    absl::StatusOr<std::vector<absl::Duration>> send_times =
        ArrivalTimes(scenario.arrivals, scenario.run_length, scenario.seed);
    if (!send_times.ok()) return send_times.status();
    absl::StatusOr<std::vector<PlannedRequest>> planned =
        PlanRequests(scenario.workload, *send_times, scenario.seed);
    if (!planned.ok()) return planned.status();
    plan = *std::move(planned);
    if (scenario.max_requests.has_value() &&
        *scenario.max_requests < static_cast<int64_t>(plan.size())) {
      plan.resize(static_cast<size_t>(*scenario.max_requests));
    }
  } else {
    absl::StatusOr<RequestGenerator> created =
        RequestGenerator::Create(scenario.workload, scenario.seed);
    if (!created.ok()) return created.status();
    generator = *std::move(created);
  }

  RunResult result;
  absl::Time run_start = absl::Now();
  if (options_.start_at.has_value()) {
    if (*options_.start_at < run_start) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the start time passed ", absl::FormatDuration(run_start - *options_.start_at), " ago"));
    }
    absl::SleepFor(*options_.start_at - run_start);
    run_start = *options_.start_at;
  }
  result.start_wall_time = run_start;
  std::unique_ptr<MetricsSampler> sampler;
  if (!options_.sampler.router_address.empty()) {
    sampler = std::make_unique<MetricsSampler>(options_.sampler, run_start);
  }
  auto collector = std::make_shared<Collector>();
  absl::Time last_send = run_start;
  auto send = [&](const PlannedRequest& request) {
    last_send = absl::Now();
    {
      std::lock_guard<std::mutex> lock(collector->mutex);
      ++collector->in_flight;
    }
    ++result.sent;
    client_.Send(request, run_start, [collector](RequestRecord record) {
      std::lock_guard<std::mutex> lock(collector->mutex);
      collector->records.push_back(std::move(record));
      --collector->in_flight;
      collector->changed.notify_all();
    });
  };

  if (scenario.mode == LoopMode::kOpen) {
    std::vector<absl::Duration> lateness;
    lateness.reserve(plan.size());
    for (const PlannedRequest& request : plan) {
      const absl::Time due = run_start + request.send_at;
      const absl::Duration wait = due - absl::Now();
      if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
      lateness.push_back(std::max(absl::ZeroDuration(), absl::Now() - due));
      send(request);
    }
    result.lateness = SummarizeLateness(std::move(lateness));
  } else {
    const auto run_end = absl::ToChronoTime(run_start + scenario.run_length);
    for (int64_t index = 0; index < scenario.max_requests.value_or(INT64_MAX); ++index) {
      {
        std::unique_lock<std::mutex> lock(collector->mutex);
        const bool room = collector->changed.wait_until(
            lock, run_end, [&] { return collector->in_flight < scenario.concurrency; });
        if (!room || absl::Now() >= run_start + scenario.run_length) break;
      }
      send(generator->NextRequest(index));
    }
  }

  const bool stopped_by_count = scenario.max_requests.has_value() &&
                                result.sent == *scenario.max_requests &&
                                last_send < run_start + scenario.run_length;
  result.sending_window = stopped_by_count ? last_send - run_start : scenario.run_length;

  const auto drain_deadline =
      absl::ToChronoTime(absl::Now() + scenario.client_timeout + options_.drain_grace);
  {
    std::unique_lock<std::mutex> lock(collector->mutex);
    collector->changed.wait_until(lock, drain_deadline, [&] {
      return static_cast<int64_t>(collector->records.size()) == result.sent;
    });
    result.records = collector->records;
  }
  result.unanswered = result.sent - static_cast<int64_t>(result.records.size());
  // Every `done` has run, so this only waits for the client's own bookkeeping.
  if (result.unanswered == 0) client_.Drain();
  std::sort(result.records.begin(), result.records.end(),
            [](const RequestRecord& a, const RequestRecord& b) { return a.index < b.index; });

  if (sampler) {
    sampler->Stop();
    result.samples = sampler->samples();
    result.sampler_failures = sampler->failures();
    result.sampler_last_error = sampler->last_error();
  }
  return result;
}

}  // namespace reflect::loadtest
