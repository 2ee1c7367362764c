// The load tester's report (issue #6): summarizes what the clients measured (RequestRecord) and
// what the router's /metrics said during the run (ServerSample) into outcome counts, latency
// percentiles, throughput, goodput under SLOs and a time series, and writes it as JSON.
//
// Definitions, so that figures from different runs and tools compare:
// - Percentiles are nearest-rank: of n sorted values, the p-th percentile is the value of rank
//   ceil(p·n/100) (1-based, at least 1). p50 of 1..100 ms is 50 ms, p99 is 99 ms; max is rank n.
// - Latencies (TTFT, time to first output token, inter-token latency, time per output token, end
//   to end) are over ok requests only; the inter-token latency pools every gap of every ok request.
//   Time per output token of a request is (end_to_end − TTFT) / (output_tokens − 1), for requests
//   with both times and at least two output tokens. Rejection latency is the end_to_end of
//   rejected requests.
// - A request ends at sent + end_to_end, or at `sent` when end_to_end is missing.
// - Rates over the run divide by the later of RunInfo::run_length and the latest end of any
//   request; they are 0 when both are zero.
// - Goodput counts ok requests that met every SLO that is set: TTFT, time to first output token
//   and end to end each ≤ its target, and the request's own p99 inter-token latency ≤ its
//   target. A missing measurement fails a set target, except that a request with no inter-token
//   gap (one output token) has no inter-token latency to exceed.
// - The time series cuts [0, span) into windows, span being the longest of the run length, the
//   latest request end and the latest server sample, rounded up to whole windows. Arrivals count
//   by send time, completions (ok), goodput, rejections and failures (error or timeout) by end
//   time; an event at the span's very end counts in the last window. Output tokens count in the
//   window each token arrived in (the first at sent + TTFT, each next one its inter-token gap
//   later), over ok requests; goodput tokens over those that met the SLOs. In flight counts
//   requests sent at or before the window's end that end after it. TTFT percentiles are of the
//   requests sent in the window that got a first token. Server figures are the last sample taken at
//   or before the window's end (none before the first sample).
//
// Summarize and ToJson are pure functions of their arguments; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "loadtest/load_types.h"
#include "nlohmann/json.hpp"

namespace reflect::loadtest {

// Service-level objectives a request must meet to count toward goodput. A target that is not
// set is not checked; ttft defaults to no limit.
struct SloTargets {
  absl::Duration ttft = absl::InfiniteDuration();
  std::optional<absl::Duration> time_to_first_output_token;
  std::optional<absl::Duration> inter_token_latency_p99;  // of each request's own gaps
  std::optional<absl::Duration> end_to_end;
};

// What was run, where and when; copied into the report as is.
struct RunInfo {
  std::string scenario_name;
  std::string command_line;
  std::string protocol;  // "grpc" or "http"
  absl::Time start_wall_time = absl::UnixEpoch();
  absl::Duration run_length = absl::ZeroDuration();  // how long requests were sent for
  std::string machine_description;
  std::optional<int64_t> planned_requests;  // when known, "lost" = planned − recorded
};

struct OutcomeCounts {
  int64_t recorded = 0;
  int64_t ok = 0;
  int64_t rejected = 0;
  int64_t error = 0;
  int64_t timeout = 0;
  std::optional<int64_t> lost;  // planned − recorded; nullopt without a planned count
};

// Nearest-rank percentiles of `count` durations; nullopt figures when count is 0.
struct DurationPercentiles {
  int64_t count = 0;
  std::optional<absl::Duration> p50;
  std::optional<absl::Duration> p90;
  std::optional<absl::Duration> p99;
  std::optional<absl::Duration> max;
};

struct LatencySummary {
  DurationPercentiles time_to_first_token;
  DurationPercentiles time_to_first_output_token;
  DurationPercentiles inter_token_latency;
  DurationPercentiles time_per_output_token;
  DurationPercentiles end_to_end;
  DurationPercentiles rejection_latency;
};

struct Throughput {
  // The denominator of every rate: from the run's start to the end of its sending
  // (run_length) or of its last request, whichever is later.
  absl::Duration duration = absl::ZeroDuration();
  double ok_requests_per_second = 0;
  double output_tokens_per_second = 0;  // of ok requests
  int64_t ok_requests_meeting_slo = 0;
  double goodput_requests_per_second = 0;
  double goodput_output_tokens_per_second = 0;
  double fraction_of_ok_meeting_slo = 0;  // 0 when there is no ok request
};

struct TimeWindow {
  absl::Duration start = absl::ZeroDuration();
  absl::Duration end = absl::ZeroDuration();
  double arrivals_per_second = 0;
  int64_t in_flight = 0;  // at the window's end
  double completions_per_second = 0;
  double goodput_requests_per_second = 0;
  double output_tokens_per_second = 0;          // tokens that arrived in the window
  double goodput_output_tokens_per_second = 0;  // of requests that met the SLOs
  double rejections_per_second = 0;
  double failures_per_second = 0;  // error or timeout
  std::optional<absl::Duration> time_to_first_token_p50;
  std::optional<absl::Duration> time_to_first_token_p99;
  std::optional<double> queued_requests;
  std::optional<double> running_requests;
  std::optional<double> kv_cache_usage_ratio;
};

struct LoadReport {
  RunInfo run;
  SloTargets slo;
  absl::Duration window = absl::Seconds(1);
  OutcomeCounts outcomes;
  LatencySummary latency;
  Throughput throughput;
  std::vector<TimeWindow> series;
};

// Nearest-rank percentile `percent` (1..100) of `values`, which it sorts; nullopt when empty.
std::optional<absl::Duration> NearestRankPercentile(std::vector<absl::Duration>& values,
                                                    int percent);

// Whether an ok request met every set target of `slo` (see the top comment).
bool MeetsSlo(const RequestRecord& record, const SloTargets& slo);

// A non-positive `window` is taken as 1 s.
LoadReport Summarize(const RunInfo& run, const std::vector<RequestRecord>& records,
                     const std::vector<ServerSample>& samples, const SloTargets& slo,
                     absl::Duration window = absl::Seconds(1));

// The report as JSON. Durations are seconds as floating point with a `_seconds` suffix, rates
// carry `_per_second`; a figure that does not exist (a percentile of nothing, an unset SLO, a
// server figure before the first sample, `lost` without a planned count) is null. Fields:
//   run: {scenario_name, command_line, protocol, start_time (RFC 3339, UTC), run_length_seconds,
//         machine_description, planned_requests}
//   slo: {ttft_seconds, time_to_first_output_token_seconds, inter_token_latency_p99_seconds,
//         end_to_end_seconds}
//   window_seconds
//   outcomes: {recorded, ok, rejected, error, timeout, lost}
//   latency: {time_to_first_token, time_to_first_output_token, inter_token_latency,
//             time_per_output_token, end_to_end, rejection_latency}, each
//            {count, p50_seconds, p90_seconds, p99_seconds, max_seconds}
//   throughput: {duration_seconds, ok_requests_per_second, output_tokens_per_second,
//                ok_requests_meeting_slo, goodput_requests_per_second,
//                goodput_output_tokens_per_second, fraction_of_ok_meeting_slo}
//   series: [{start_seconds, end_seconds, arrivals_per_second, in_flight,
//             completions_per_second, goodput_requests_per_second, output_tokens_per_second,
//             goodput_output_tokens_per_second, rejections_per_second,
//             failures_per_second, ttft_p50_seconds, ttft_p99_seconds, queued_requests,
//             running_requests, kv_cache_usage_ratio}]
nlohmann::json ToJson(const LoadReport& report);

}  // namespace reflect::loadtest
