#include "loadtest/report.h"

#include <algorithm>
#include <cstddef>
#include <utility>

namespace reflect::loadtest {
namespace {

absl::Duration EndOf(const RequestRecord& record) {
  return record.sent +
         std::max(record.end_to_end.value_or(absl::ZeroDuration()), absl::ZeroDuration());
}

DurationPercentiles Percentiles(std::vector<absl::Duration> values) {
  DurationPercentiles result;
  result.count = static_cast<int64_t>(values.size());
  result.p50 = NearestRankPercentile(values, 50);
  result.p90 = NearestRankPercentile(values, 90);
  result.p99 = NearestRankPercentile(values, 99);
  result.max = NearestRankPercentile(values, 100);
  return result;
}

bool Within(const std::optional<absl::Duration>& measured, absl::Duration target) {
  return measured.has_value() && *measured <= target;
}

OutcomeCounts CountOutcomes(const RunInfo& run, const std::vector<RequestRecord>& records) {
  OutcomeCounts counts;
  counts.recorded = static_cast<int64_t>(records.size());
  for (const RequestRecord& record : records) {
    switch (record.outcome) {
      case RequestOutcome::kOk:
        ++counts.ok;
        break;
      case RequestOutcome::kRejected:
        ++counts.rejected;
        break;
      case RequestOutcome::kError:
        ++counts.error;
        break;
      case RequestOutcome::kTimeout:
        ++counts.timeout;
        break;
    }
  }
  if (run.planned_requests.has_value()) counts.lost = *run.planned_requests - counts.recorded;
  return counts;
}

LatencySummary SummarizeLatency(const std::vector<RequestRecord>& records) {
  std::vector<absl::Duration> ttft, first_output, inter_token, per_output_token, end_to_end,
      rejection;
  for (const RequestRecord& record : records) {
    if (record.outcome == RequestOutcome::kRejected && record.end_to_end.has_value()) {
      rejection.push_back(*record.end_to_end);
    }
    if (record.outcome != RequestOutcome::kOk) continue;
    if (record.time_to_first_token.has_value()) ttft.push_back(*record.time_to_first_token);
    if (record.time_to_first_output_token.has_value()) {
      first_output.push_back(*record.time_to_first_output_token);
    }
    inter_token.insert(inter_token.end(), record.inter_token_latencies.begin(),
                       record.inter_token_latencies.end());
    if (record.end_to_end.has_value()) end_to_end.push_back(*record.end_to_end);
    if (record.end_to_end.has_value() && record.time_to_first_token.has_value() &&
        record.output_tokens >= 2) {
      per_output_token.push_back((*record.end_to_end - *record.time_to_first_token) /
                                 (record.output_tokens - 1));
    }
  }
  LatencySummary summary;
  summary.time_to_first_token = Percentiles(std::move(ttft));
  summary.time_to_first_output_token = Percentiles(std::move(first_output));
  summary.inter_token_latency = Percentiles(std::move(inter_token));
  summary.time_per_output_token = Percentiles(std::move(per_output_token));
  summary.end_to_end = Percentiles(std::move(end_to_end));
  summary.rejection_latency = Percentiles(std::move(rejection));
  return summary;
}

Throughput SummarizeThroughput(const RunInfo& run, const std::vector<RequestRecord>& records,
                               const SloTargets& slo) {
  Throughput throughput;
  // Requests sent near the end finish after it (a closed loop's drain, a spike's long traces):
  // their tokens count, so the time they took counts too.
  throughput.duration = std::max(run.run_length, absl::ZeroDuration());
  for (const RequestRecord& record : records) {
    throughput.duration = std::max(throughput.duration, EndOf(record));
  }
  int64_t ok = 0, ok_tokens = 0, good_tokens = 0;
  for (const RequestRecord& record : records) {
    if (record.outcome != RequestOutcome::kOk) continue;
    ++ok;
    ok_tokens += record.output_tokens;
    if (MeetsSlo(record, slo)) {
      ++throughput.ok_requests_meeting_slo;
      good_tokens += record.output_tokens;
    }
  }
  if (ok > 0) {
    throughput.fraction_of_ok_meeting_slo =
        static_cast<double>(throughput.ok_requests_meeting_slo) / static_cast<double>(ok);
  }
  const double seconds = absl::ToDoubleSeconds(throughput.duration);
  if (seconds > 0) {
    throughput.ok_requests_per_second = static_cast<double>(ok) / seconds;
    throughput.output_tokens_per_second = static_cast<double>(ok_tokens) / seconds;
    throughput.goodput_requests_per_second =
        static_cast<double>(throughput.ok_requests_meeting_slo) / seconds;
    throughput.goodput_output_tokens_per_second = static_cast<double>(good_tokens) / seconds;
  }
  return throughput;
}

std::vector<TimeWindow> SummarizeSeries(const RunInfo& run,
                                        const std::vector<RequestRecord>& records,
                                        const std::vector<ServerSample>& samples,
                                        const SloTargets& slo, absl::Duration window) {
  absl::Duration span = std::max(run.run_length, absl::ZeroDuration());
  for (const RequestRecord& record : records) span = std::max(span, EndOf(record));
  for (const ServerSample& sample : samples) span = std::max(span, sample.at);
  absl::Duration remainder;
  int64_t window_count = absl::IDivDuration(span, window, &remainder);
  if (remainder > absl::ZeroDuration()) ++window_count;

  std::vector<TimeWindow> series(static_cast<size_t>(window_count));
  for (int64_t i = 0; i < window_count; ++i) {
    series[i].start = window * i;
    series[i].end = window * (i + 1);
  }
  if (series.empty()) return series;
  const auto index_of = [&](absl::Duration at) {
    if (at <= absl::ZeroDuration()) return size_t{0};
    absl::Duration unused;
    return static_cast<size_t>(std::min(absl::IDivDuration(at, window, &unused), window_count - 1));
  };
  const double per_window = 1.0 / absl::ToDoubleSeconds(window);
  std::vector<std::vector<absl::Duration>> ttft_by_window(series.size());
  for (const RequestRecord& record : records) {
    series[index_of(record.sent)].arrivals_per_second += per_window;
    TimeWindow& ended = series[index_of(EndOf(record))];
    switch (record.outcome) {
      case RequestOutcome::kOk: {
        ended.completions_per_second += per_window;
        const bool good = MeetsSlo(record, slo);
        if (good) ended.goodput_requests_per_second += per_window;
        if (!record.time_to_first_token.has_value()) break;
        absl::Duration arrival = record.sent + *record.time_to_first_token;
        const auto count_token = [&] {
          TimeWindow& window = series[index_of(arrival)];
          window.output_tokens_per_second += per_window;
          if (good) window.goodput_output_tokens_per_second += per_window;
        };
        count_token();
        for (const absl::Duration gap : record.inter_token_latencies) {
          arrival += gap;
          count_token();
        }
        break;
      }
      case RequestOutcome::kRejected:
        ended.rejections_per_second += per_window;
        break;
      case RequestOutcome::kError:
      case RequestOutcome::kTimeout:
        ended.failures_per_second += per_window;
        break;
    }
    if (record.time_to_first_token.has_value()) {
      ttft_by_window[index_of(record.sent)].push_back(*record.time_to_first_token);
    }
  }
  // Ends are never before sends, so in flight at T = #(sent ≤ T) − #(end ≤ T).
  std::vector<absl::Duration> sends, ends;
  for (const RequestRecord& record : records) {
    sends.push_back(record.sent);
    ends.push_back(EndOf(record));
  }
  std::sort(sends.begin(), sends.end());
  std::sort(ends.begin(), ends.end());
  for (TimeWindow& each : series) {
    each.in_flight = std::upper_bound(sends.begin(), sends.end(), each.end) - sends.begin() -
                     (std::upper_bound(ends.begin(), ends.end(), each.end) - ends.begin());
  }
  std::vector<ServerSample> sorted_samples = samples;
  std::stable_sort(sorted_samples.begin(), sorted_samples.end(),
                   [](const ServerSample& a, const ServerSample& b) { return a.at < b.at; });
  size_t next_sample = 0;
  const ServerSample* latest = nullptr;
  for (size_t i = 0; i < series.size(); ++i) {
    series[i].time_to_first_token_p50 = NearestRankPercentile(ttft_by_window[i], 50);
    series[i].time_to_first_token_p99 = NearestRankPercentile(ttft_by_window[i], 99);
    while (next_sample < sorted_samples.size() && sorted_samples[next_sample].at <= series[i].end) {
      latest = &sorted_samples[next_sample++];
    }
    if (latest != nullptr) {
      series[i].queued_requests = latest->queued_requests;
      series[i].running_requests = latest->running_requests;
      series[i].kv_cache_usage_ratio = latest->kv_cache_usage_ratio;
    }
  }
  return series;
}

nlohmann::json SecondsOrNull(const std::optional<absl::Duration>& duration) {
  if (!duration.has_value()) return nullptr;
  return absl::ToDoubleSeconds(*duration);
}

template <typename T>
nlohmann::json ValueOrNull(const std::optional<T>& value) {
  if (!value.has_value()) return nullptr;
  return *value;
}

nlohmann::json PercentilesJson(const DurationPercentiles& percentiles) {
  return {{"count", percentiles.count},
          {"p50_seconds", SecondsOrNull(percentiles.p50)},
          {"p90_seconds", SecondsOrNull(percentiles.p90)},
          {"p99_seconds", SecondsOrNull(percentiles.p99)},
          {"max_seconds", SecondsOrNull(percentiles.max)}};
}

}  // namespace

std::optional<absl::Duration> NearestRankPercentile(std::vector<absl::Duration>& values,
                                                    int percent) {
  if (values.empty()) return std::nullopt;
  const int64_t count = static_cast<int64_t>(values.size());
  const int64_t rank = std::clamp<int64_t>((percent * count + 99) / 100, 1, count);
  std::nth_element(values.begin(), values.begin() + (rank - 1), values.end());
  return values[static_cast<size_t>(rank - 1)];
}

bool MeetsSlo(const RequestRecord& record, const SloTargets& slo) {
  if (record.outcome != RequestOutcome::kOk) return false;
  if (slo.ttft != absl::InfiniteDuration() && !Within(record.time_to_first_token, slo.ttft)) {
    return false;
  }
  if (slo.time_to_first_output_token.has_value() &&
      !Within(record.time_to_first_output_token, *slo.time_to_first_output_token)) {
    return false;
  }
  if (slo.end_to_end.has_value() && !Within(record.end_to_end, *slo.end_to_end)) return false;
  if (slo.inter_token_latency_p99.has_value() && !record.inter_token_latencies.empty()) {
    std::vector<absl::Duration> gaps = record.inter_token_latencies;
    if (!Within(NearestRankPercentile(gaps, 99), *slo.inter_token_latency_p99)) return false;
  }
  return true;
}

LoadReport Summarize(const RunInfo& run, const std::vector<RequestRecord>& records,
                     const std::vector<ServerSample>& samples, const SloTargets& slo,
                     absl::Duration window) {
  LoadReport report;
  report.run = run;
  report.slo = slo;
  report.window = window > absl::ZeroDuration() ? window : absl::Seconds(1);
  report.outcomes = CountOutcomes(run, records);
  report.latency = SummarizeLatency(records);
  report.throughput = SummarizeThroughput(run, records, slo);
  report.series = SummarizeSeries(run, records, samples, slo, report.window);
  return report;
}

nlohmann::json ToJson(const LoadReport& report) {
  const RunInfo& run = report.run;
  const SloTargets& slo = report.slo;
  const OutcomeCounts& outcomes = report.outcomes;
  const LatencySummary& latency = report.latency;
  const Throughput& throughput = report.throughput;
  nlohmann::json series = nlohmann::json::array();
  for (const TimeWindow& window : report.series) {
    series.push_back({
        {"start_seconds", absl::ToDoubleSeconds(window.start)},
        {"end_seconds", absl::ToDoubleSeconds(window.end)},
        {"arrivals_per_second", window.arrivals_per_second},
        {"in_flight", window.in_flight},
        {"completions_per_second", window.completions_per_second},
        {"goodput_requests_per_second", window.goodput_requests_per_second},
        {"output_tokens_per_second", window.output_tokens_per_second},
        {"goodput_output_tokens_per_second", window.goodput_output_tokens_per_second},
        {"rejections_per_second", window.rejections_per_second},
        {"failures_per_second", window.failures_per_second},
        {"ttft_p50_seconds", SecondsOrNull(window.time_to_first_token_p50)},
        {"ttft_p99_seconds", SecondsOrNull(window.time_to_first_token_p99)},
        {"queued_requests", ValueOrNull(window.queued_requests)},
        {"running_requests", ValueOrNull(window.running_requests)},
        {"kv_cache_usage_ratio", ValueOrNull(window.kv_cache_usage_ratio)},
    });
  }
  const std::optional<absl::Duration> ttft_target =
      slo.ttft == absl::InfiniteDuration() ? std::nullopt : std::make_optional(slo.ttft);
  return {
      {"run",
       {{"scenario_name", run.scenario_name},
        {"command_line", run.command_line},
        {"protocol", run.protocol},
        {"start_time",
         absl::FormatTime(absl::RFC3339_full, run.start_wall_time, absl::UTCTimeZone())},
        {"run_length_seconds", absl::ToDoubleSeconds(run.run_length)},
        {"machine_description", run.machine_description},
        {"planned_requests", ValueOrNull(run.planned_requests)}}},
      {"slo",
       {{"ttft_seconds", SecondsOrNull(ttft_target)},
        {"time_to_first_output_token_seconds", SecondsOrNull(slo.time_to_first_output_token)},
        {"inter_token_latency_p99_seconds", SecondsOrNull(slo.inter_token_latency_p99)},
        {"end_to_end_seconds", SecondsOrNull(slo.end_to_end)}}},
      {"window_seconds", absl::ToDoubleSeconds(report.window)},
      {"outcomes",
       {{"recorded", outcomes.recorded},
        {"ok", outcomes.ok},
        {"rejected", outcomes.rejected},
        {"error", outcomes.error},
        {"timeout", outcomes.timeout},
        {"lost", ValueOrNull(outcomes.lost)}}},
      {"latency",
       {{"time_to_first_token", PercentilesJson(latency.time_to_first_token)},
        {"time_to_first_output_token", PercentilesJson(latency.time_to_first_output_token)},
        {"inter_token_latency", PercentilesJson(latency.inter_token_latency)},
        {"time_per_output_token", PercentilesJson(latency.time_per_output_token)},
        {"end_to_end", PercentilesJson(latency.end_to_end)},
        {"rejection_latency", PercentilesJson(latency.rejection_latency)}}},
      {"throughput",
       {{"duration_seconds", absl::ToDoubleSeconds(throughput.duration)},
        {"ok_requests_per_second", throughput.ok_requests_per_second},
        {"output_tokens_per_second", throughput.output_tokens_per_second},
        {"ok_requests_meeting_slo", throughput.ok_requests_meeting_slo},
        {"goodput_requests_per_second", throughput.goodput_requests_per_second},
        {"goodput_output_tokens_per_second", throughput.goodput_output_tokens_per_second},
        {"fraction_of_ok_meeting_slo", throughput.fraction_of_ok_meeting_slo}}},
      {"series", std::move(series)},
  };
}

}  // namespace reflect::loadtest
