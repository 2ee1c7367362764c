// The load tester's report: outcome counts, nearest-rank percentiles, throughput and goodput under
// SLOs, the time series and the JSON fields are checked against references computed here from
// synthetic records; the HTML page is parsed by Python's html.parser to check that its tags
// balance, that it has one <svg> per chart, escapes text and fetches nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "loadtest/report.h"
#include "loadtest/report_html.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"

namespace reflect::loadtest {
namespace {

constexpr int kChartCount = 7;

// Independent nearest-rank reference: sorted[ceil(p·n/100) − 1], ceil done in floating point.
absl::Duration Reference(std::vector<absl::Duration> values, double percent) {
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(percent / 100.0 * static_cast<double>(values.size()) - 1e-9);
  return values[static_cast<size_t>(std::max(rank, 1.0)) - 1];
}

absl::Duration EndOf(const RequestRecord& record) {
  return record.sent + record.end_to_end.value_or(absl::ZeroDuration());
}

// A mixed run: mostly ok requests with random latencies, plus rejections, errors and timeouts.
std::vector<RequestRecord> MixedRecords(int count, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> millis(1, 400);
  std::uniform_int_distribution<int> tokens(1, 12);
  std::uniform_int_distribution<int> kind(0, 9);
  std::vector<RequestRecord> records;
  for (int i = 0; i < count; ++i) {
    RequestRecord record;
    record.index = i;
    record.sent = absl::Milliseconds(37 * i + millis(random) % 20);
    const int k = kind(random);
    if (k < 6) {
      record.outcome = RequestOutcome::kOk;
      record.time_to_first_token = absl::Milliseconds(millis(random));
      record.time_to_first_output_token = *record.time_to_first_token + absl::Milliseconds(3);
      record.output_tokens = tokens(random);
      absl::Duration total = *record.time_to_first_token;
      for (int t = 1; t < record.output_tokens; ++t) {
        record.inter_token_latencies.push_back(absl::Milliseconds(millis(random) / 10));
        total += record.inter_token_latencies.back();
      }
      record.end_to_end = total;
    } else if (k < 8) {
      record.outcome = RequestOutcome::kRejected;
      record.end_to_end = absl::Milliseconds(millis(random) / 20);
      record.retry_after = absl::Seconds(2);
    } else {
      record.outcome = k == 8 ? RequestOutcome::kError : RequestOutcome::kTimeout;
      record.end_to_end = absl::Milliseconds(millis(random) * 3);
    }
    records.push_back(record);
  }
  return records;
}

TEST(LoadReportTest, NearestRankOfOneToHundredMilliseconds) {
  std::vector<RequestRecord> records;
  for (int i = 100; i >= 1; --i) {
    RequestRecord record;
    record.outcome = RequestOutcome::kOk;
    record.time_to_first_token = absl::Milliseconds(i);
    records.push_back(record);
  }
  std::vector<absl::Duration> ttfts;
  for (const RequestRecord& record : records) ttfts.push_back(*record.time_to_first_token);
  const LoadReport report = Summarize({}, records, {}, {});
  const DurationPercentiles& ttft = report.latency.time_to_first_token;
  EXPECT_EQ(ttft.count, 100);
  EXPECT_EQ(*ttft.p50, absl::Milliseconds(50));
  EXPECT_EQ(*ttft.p99, absl::Milliseconds(99));
  EXPECT_EQ(*ttft.p50, Reference(ttfts, 50));
  EXPECT_EQ(*ttft.p90, Reference(ttfts, 90));
  EXPECT_EQ(*ttft.max, absl::Milliseconds(100));
}

TEST(LoadReportTest, OutcomesAndLatencyPercentilesMatchReference) {
  const std::vector<RequestRecord> records = MixedRecords(500, 7);
  RunInfo run;
  run.planned_requests = 510;
  const LoadReport report = Summarize(run, records, {}, {});

  int64_t ok = 0, rejected = 0, error = 0, timeout = 0;
  std::vector<absl::Duration> ttft, first_output, gaps, per_token, end_to_end, rejection;
  for (const RequestRecord& record : records) {
    ok += record.outcome == RequestOutcome::kOk;
    rejected += record.outcome == RequestOutcome::kRejected;
    error += record.outcome == RequestOutcome::kError;
    timeout += record.outcome == RequestOutcome::kTimeout;
    if (record.outcome == RequestOutcome::kRejected) rejection.push_back(*record.end_to_end);
    if (record.outcome != RequestOutcome::kOk) continue;
    ttft.push_back(*record.time_to_first_token);
    first_output.push_back(*record.time_to_first_output_token);
    end_to_end.push_back(*record.end_to_end);
    for (absl::Duration gap : record.inter_token_latencies) gaps.push_back(gap);
    if (record.output_tokens > 1) {
      per_token.push_back((*record.end_to_end - *record.time_to_first_token) /
                          (record.output_tokens - 1));
    }
  }
  EXPECT_EQ(report.outcomes.recorded, 500);
  EXPECT_EQ(report.outcomes.ok, ok);
  EXPECT_EQ(report.outcomes.rejected, rejected);
  EXPECT_EQ(report.outcomes.error, error);
  EXPECT_EQ(report.outcomes.timeout, timeout);
  EXPECT_EQ(report.outcomes.lost, 10);
  ASSERT_GT(ok * rejected * error * timeout, 0);

  const auto expect_matches = [](const DurationPercentiles& actual,
                                 const std::vector<absl::Duration>& values, const char* name) {
    SCOPED_TRACE(name);
    ASSERT_EQ(actual.count, static_cast<int64_t>(values.size()));
    EXPECT_EQ(*actual.p50, Reference(values, 50));
    EXPECT_EQ(*actual.p90, Reference(values, 90));
    EXPECT_EQ(*actual.p99, Reference(values, 99));
    EXPECT_EQ(*actual.max, *std::max_element(values.begin(), values.end()));
  };
  expect_matches(report.latency.time_to_first_token, ttft, "ttft");
  expect_matches(report.latency.time_to_first_output_token, first_output, "first output");
  expect_matches(report.latency.inter_token_latency, gaps, "inter-token");
  expect_matches(report.latency.time_per_output_token, per_token, "per output token");
  expect_matches(report.latency.end_to_end, end_to_end, "end to end");
  expect_matches(report.latency.rejection_latency, rejection, "rejection");
}

TEST(LoadReportTest, GoodputCountsOkRequestsMeetingEverySlo) {
  const std::vector<RequestRecord> records = MixedRecords(400, 11);
  RunInfo run;
  run.run_length = absl::Seconds(20);
  SloTargets slo;
  slo.ttft = absl::Milliseconds(250);
  slo.inter_token_latency_p99 = absl::Milliseconds(30);
  slo.end_to_end = absl::Milliseconds(320);
  const LoadReport report = Summarize(run, records, {}, slo);

  int64_t ok = 0, good = 0, ok_tokens = 0, good_tokens = 0;
  for (const RequestRecord& record : records) {
    if (record.outcome != RequestOutcome::kOk) continue;
    ++ok;
    ok_tokens += record.output_tokens;
    bool met = *record.time_to_first_token <= absl::Milliseconds(250) &&
               *record.end_to_end <= absl::Milliseconds(320);
    if (!record.inter_token_latencies.empty()) {
      met = met && Reference(record.inter_token_latencies, 99) <= absl::Milliseconds(30);
    }
    if (met) {
      ++good;
      good_tokens += record.output_tokens;
    }
  }
  ASSERT_GT(good, 0);
  ASSERT_LT(good, ok);
  const Throughput& throughput = report.throughput;
  EXPECT_EQ(throughput.ok_requests_meeting_slo, good);
  EXPECT_DOUBLE_EQ(throughput.ok_requests_per_second, ok / 20.0);
  EXPECT_DOUBLE_EQ(throughput.output_tokens_per_second, ok_tokens / 20.0);
  EXPECT_DOUBLE_EQ(throughput.goodput_requests_per_second, good / 20.0);
  EXPECT_DOUBLE_EQ(throughput.goodput_output_tokens_per_second, good_tokens / 20.0);
  EXPECT_DOUBLE_EQ(throughput.fraction_of_ok_meeting_slo, static_cast<double>(good) / ok);

  // Without SLOs every ok request counts.
  EXPECT_EQ(Summarize(run, records, {}, {}).throughput.ok_requests_meeting_slo, ok);
}

TEST(LoadReportTest, RatesRunToTheEndOfTheLastRequest) {
  // 400 records sent over about 14.8 s: a 10 s run length ends before they do, so the rates'
  // denominator is the last request's end, not the run length; a 30 s run length stays.
  const std::vector<RequestRecord> records = MixedRecords(400, 11);
  absl::Duration last_end = absl::ZeroDuration();
  int64_t ok = 0;
  for (const RequestRecord& record : records) {
    last_end = std::max(last_end, record.sent + record.end_to_end.value_or(absl::ZeroDuration()));
    if (record.outcome == RequestOutcome::kOk) ++ok;
  }
  ASSERT_GT(last_end, absl::Seconds(14));
  RunInfo run;
  run.run_length = absl::Seconds(10);
  const Throughput short_run = Summarize(run, records, {}, {}).throughput;
  EXPECT_EQ(short_run.duration, last_end);
  EXPECT_DOUBLE_EQ(short_run.ok_requests_per_second, ok / absl::ToDoubleSeconds(last_end));
  run.run_length = absl::Seconds(30);
  EXPECT_EQ(Summarize(run, records, {}, {}).throughput.duration, absl::Seconds(30));
}

TEST(LoadReportTest, TimeSeriesWindowsMatchBruteForce) {
  const std::vector<RequestRecord> records = MixedRecords(300, 3);
  const std::vector<ServerSample> samples = {
      {.at = absl::Milliseconds(2500),
       .queued_requests = 4,
       .running_requests = 2,
       .kv_cache_usage_ratio = 0.25},
      {.at = absl::Milliseconds(1200),
       .queued_requests = 1,
       .running_requests = 1,
       .kv_cache_usage_ratio = 0.5},
      {.at = absl::Milliseconds(5000),
       .queued_requests = 0,
       .running_requests = 3,
       .kv_cache_usage_ratio = 0.75},
  };
  const absl::Duration window = absl::Milliseconds(500);
  RunInfo run;
  run.run_length = absl::Seconds(10);
  const LoadReport report = Summarize(run, records, samples, {}, window);

  absl::Duration span = run.run_length;
  for (const RequestRecord& record : records) span = std::max(span, EndOf(record));
  const int64_t windows = static_cast<int64_t>(std::ceil(absl::ToDoubleSeconds(span) / 0.5));
  ASSERT_EQ(static_cast<int64_t>(report.series.size()), windows);
  for (int64_t w = 0; w < windows; ++w) {
    SCOPED_TRACE(w);
    const TimeWindow& actual = report.series[w];
    const absl::Duration start = window * w, end = window * (w + 1);
    EXPECT_EQ(actual.start, start);
    EXPECT_EQ(actual.end, end);
    int arrivals = 0, completions = 0, rejections = 0, in_flight = 0;
    std::vector<absl::Duration> ttft;
    for (const RequestRecord& record : records) {
      if (record.sent >= start && record.sent < end) {
        ++arrivals;
        if (record.time_to_first_token.has_value()) ttft.push_back(*record.time_to_first_token);
      }
      const bool ends_here = EndOf(record) >= start && (EndOf(record) < end || w == windows - 1);
      completions += ends_here && record.outcome == RequestOutcome::kOk;
      rejections += ends_here && record.outcome == RequestOutcome::kRejected;
      in_flight += record.sent <= end && EndOf(record) > end;
    }
    EXPECT_DOUBLE_EQ(actual.arrivals_per_second, arrivals * 2.0);
    EXPECT_DOUBLE_EQ(actual.completions_per_second, completions * 2.0);
    EXPECT_DOUBLE_EQ(actual.rejections_per_second, rejections * 2.0);
    EXPECT_EQ(actual.in_flight, in_flight);
    if (ttft.empty()) {
      EXPECT_FALSE(actual.time_to_first_token_p50.has_value());
    } else {
      EXPECT_EQ(actual.time_to_first_token_p50, Reference(ttft, 50));
      EXPECT_EQ(actual.time_to_first_token_p99, Reference(ttft, 99));
    }
    // The last sample taken at or before the window's end.
    const ServerSample* latest = nullptr;
    for (const ServerSample& sample : samples) {
      if (sample.at <= end && (latest == nullptr || sample.at > latest->at)) latest = &sample;
    }
    if (latest == nullptr) {
      EXPECT_FALSE(actual.queued_requests.has_value());
      EXPECT_FALSE(actual.kv_cache_usage_ratio.has_value());
    } else {
      EXPECT_EQ(actual.queued_requests, latest->queued_requests);
      EXPECT_EQ(actual.running_requests, latest->running_requests);
      EXPECT_EQ(actual.kv_cache_usage_ratio, latest->kv_cache_usage_ratio);
    }
  }
}

// Output tokens count in the window they arrived in: the first at sent + TTFT, then one per
// inter-token gap; goodput tokens only for requests that met the SLOs.
TEST(LoadReportTest, OutputTokensCountInTheWindowTheyArrived) {
  RequestRecord slow;  // tokens at 0.5, 0.6, 0.7 and 1.3 s; TTFT 0.3 s misses the 0.25 s SLO
  slow.outcome = RequestOutcome::kOk;
  slow.sent = absl::Milliseconds(200);
  slow.time_to_first_token = absl::Milliseconds(300);
  slow.inter_token_latencies = {absl::Milliseconds(100), absl::Milliseconds(100),
                                absl::Milliseconds(600)};
  slow.end_to_end = absl::Milliseconds(1100);
  slow.output_tokens = 4;
  RequestRecord fast = slow;  // tokens at 0.3 and 1.2 s; meets the SLO
  fast.sent = absl::Milliseconds(100);
  fast.time_to_first_token = absl::Milliseconds(200);
  fast.inter_token_latencies = {absl::Milliseconds(900)};
  fast.end_to_end = absl::Milliseconds(1100);
  fast.output_tokens = 2;
  RequestRecord rejected;
  rejected.outcome = RequestOutcome::kRejected;
  rejected.end_to_end = absl::Milliseconds(1);
  SloTargets slo;
  slo.ttft = absl::Milliseconds(250);
  const LoadReport report =
      Summarize(RunInfo{}, {slow, fast, rejected}, {}, slo, absl::Milliseconds(500));
  ASSERT_EQ(report.series.size(), 3u);
  EXPECT_DOUBLE_EQ(report.series[0].output_tokens_per_second, 2.0);  // fast's first
  EXPECT_DOUBLE_EQ(report.series[1].output_tokens_per_second, 6.0);  // slow's first three
  EXPECT_DOUBLE_EQ(report.series[2].output_tokens_per_second, 4.0);  // one of each
  EXPECT_DOUBLE_EQ(report.series[0].goodput_output_tokens_per_second, 2.0);
  EXPECT_DOUBLE_EQ(report.series[1].goodput_output_tokens_per_second, 0.0);
  EXPECT_DOUBLE_EQ(report.series[2].goodput_output_tokens_per_second, 2.0);
}

TEST(LoadReportTest, JsonHasDocumentedFieldsInSeconds) {
  const std::vector<RequestRecord> records = MixedRecords(50, 5);
  RunInfo run;
  run.scenario_name = "steady";
  run.protocol = "grpc";
  run.run_length = absl::Seconds(3);
  run.start_wall_time = absl::FromUnixSeconds(1700000000);
  SloTargets slo;
  slo.ttft = absl::Milliseconds(200);
  const LoadReport report = Summarize(run, records, {}, slo);
  const nlohmann::json json = ToJson(report);

  EXPECT_EQ(json["run"]["scenario_name"], "steady");
  EXPECT_EQ(json["run"]["protocol"], "grpc");
  EXPECT_EQ(json["run"]["start_time"], "2023-11-14T22:13:20+00:00");
  EXPECT_DOUBLE_EQ(json["run"]["run_length_seconds"].get<double>(), 3.0);
  EXPECT_TRUE(json["run"]["planned_requests"].is_null());
  EXPECT_DOUBLE_EQ(json["slo"]["ttft_seconds"].get<double>(), 0.2);
  EXPECT_TRUE(json["slo"]["end_to_end_seconds"].is_null());
  EXPECT_DOUBLE_EQ(json["window_seconds"].get<double>(), 1.0);
  EXPECT_EQ(json["outcomes"]["recorded"], 50);
  EXPECT_EQ(json["outcomes"]["ok"], report.outcomes.ok);
  EXPECT_TRUE(json["outcomes"]["lost"].is_null());
  for (const char* name :
       {"time_to_first_token", "time_to_first_output_token", "inter_token_latency",
        "time_per_output_token", "end_to_end", "rejection_latency"}) {
    SCOPED_TRACE(name);
    const nlohmann::json& percentiles = json["latency"][name];
    for (const char* field :
         {"count", "p50_seconds", "p90_seconds", "p99_seconds", "max_seconds"}) {
      EXPECT_TRUE(percentiles.contains(field)) << field;
    }
  }
  EXPECT_DOUBLE_EQ(json["latency"]["time_to_first_token"]["p99_seconds"].get<double>(),
                   absl::ToDoubleSeconds(*report.latency.time_to_first_token.p99));
  EXPECT_DOUBLE_EQ(json["throughput"]["goodput_requests_per_second"].get<double>(),
                   report.throughput.ok_requests_meeting_slo / 3.0);
  ASSERT_EQ(json["series"].size(), report.series.size());
  double arrivals = 0;
  for (const nlohmann::json& window : json["series"]) {
    for (const char* field : {"start_seconds", "end_seconds", "in_flight", "completions_per_second",
                              "output_tokens_per_second", "goodput_output_tokens_per_second",
                              "rejections_per_second", "ttft_p50_seconds", "ttft_p99_seconds",
                              "queued_requests", "running_requests", "kv_cache_usage_ratio"}) {
      EXPECT_TRUE(window.contains(field)) << field;
    }
    arrivals += window["arrivals_per_second"].get<double>();  // 1 s windows
  }
  EXPECT_DOUBLE_EQ(arrivals, 50);
}

struct ParsedHtml {
  bool balanced = false;
  int svg_count = 0;
  std::vector<std::string> tags;
  std::string text;          // decoded text outside <style>
  int raw_url_schemes = 0;   // "://" anywhere in the file
  int text_url_schemes = 0;  // "://" in `text`
};

// Parses `html` with Python's html.parser; tags must nest and close (void elements aside).
ParsedHtml ParseHtml(const std::string& html) {
  const testing::ProcessResult result = testing::RunProcess({"/usr/bin/env", "python3", "-c", R"(
import html.parser, json, sys
VOID = {"meta", "br", "hr", "img", "input", "link"}
class Checker(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.ok, self.tags, self.text, self.svg = [], True, set(), [], 0
    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.svg += tag == "svg"
        if tag not in VOID:
            self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)
    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.ok = False
    def handle_data(self, data):
        if not self.stack or self.stack[-1] != "style":
            self.text.append(data)
raw = sys.stdin.read()
checker = Checker()
checker.feed(raw)
checker.close()
text = "".join(checker.text)
print(json.dumps({"balanced": checker.ok and not checker.stack, "svg": checker.svg,
                  "tags": sorted(checker.tags), "text": text,
                  "raw_schemes": raw.count("://"), "text_schemes": text.count("://")}))
)"},
                                                            html);
  EXPECT_EQ(result.exit_code, 0) << result.standard_error;
  const nlohmann::json json = nlohmann::json::parse(result.standard_output);
  return {.balanced = json["balanced"].get<bool>(),
          .svg_count = json["svg"].get<int>(),
          .tags = json["tags"].get<std::vector<std::string>>(),
          .text = json["text"].get<std::string>(),
          .raw_url_schemes = json["raw_schemes"].get<int>(),
          .text_url_schemes = json["text_schemes"].get<int>()};
}

void ExpectSelfContained(const std::string& html, const ParsedHtml& parsed) {
  EXPECT_TRUE(parsed.balanced);
  EXPECT_EQ(parsed.svg_count, kChartCount);
  for (const char* fetching : {"script", "link", "img", "iframe", "object", "embed", "image"}) {
    EXPECT_EQ(std::count(parsed.tags.begin(), parsed.tags.end(), fetching), 0) << fetching;
  }
  EXPECT_EQ(parsed.raw_url_schemes, parsed.text_url_schemes);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("href"), std::string::npos);
  EXPECT_FALSE(std::regex_search(html, std::regex(R"(\b-?(nan|inf)\b)", std::regex::icase)));
}

TEST(LoadReportHtmlTest, SelfContainedWellFormedAndEscaped) {
  RunInfo run;
  run.scenario_name = "<script>alert('x')</script> & see https://example.invalid/";
  run.command_line = "reflect-loadtest --target=http://127.0.0.1:8080 \"quoted\"";
  run.run_length = absl::Seconds(12);
  const std::vector<ServerSample> samples = {{.at = absl::Seconds(2),
                                              .queued_requests = 3,
                                              .running_requests = 4,
                                              .kv_cache_usage_ratio = 0.4}};
  const LoadReport report = Summarize(run, MixedRecords(200, 9), samples, {});
  const std::string html = ToHtml(report);
  const ParsedHtml parsed = ParseHtml(html);

  ExpectSelfContained(html, parsed);
  EXPECT_EQ(parsed.text_url_schemes, 4);  // scenario in title, heading and table; command
  EXPECT_NE(parsed.text.find(run.scenario_name), std::string::npos);
  EXPECT_NE(parsed.text.find(run.command_line), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp;"), std::string::npos);
  for (const char* heading :
       {"Arrival and completion rate", "In flight", "Time to first token", "Server queue",
        "Rejections", "KV cache usage", "time since start (s)"}) {
    EXPECT_NE(parsed.text.find(heading), std::string::npos) << heading;
  }
}

TEST(LoadReportHtmlTest, EmptyRunGivesAValidReport) {
  const LoadReport report = Summarize({}, {}, {}, {});
  EXPECT_EQ(report.outcomes.recorded, 0);
  EXPECT_TRUE(report.series.empty());
  EXPECT_FALSE(report.latency.time_to_first_token.p50.has_value());
  EXPECT_DOUBLE_EQ(report.throughput.fraction_of_ok_meeting_slo, 0);
  const nlohmann::json json = ToJson(report);
  EXPECT_TRUE(json["series"].is_array());
  EXPECT_TRUE(json["latency"]["end_to_end"]["p99_seconds"].is_null());
  for (const auto& [name, value] : json["throughput"].items()) {
    EXPECT_TRUE(value.is_number()) << name;
    EXPECT_EQ(value.get<double>(), 0) << name;
  }

  const std::string html = ToHtml(report);
  const ParsedHtml parsed = ParseHtml(html);
  ExpectSelfContained(html, parsed);
  EXPECT_NE(parsed.text.find("no data"), std::string::npos);
}

}  // namespace
}  // namespace reflect::loadtest
