#include "loadtest/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace reflect::loadtest {
namespace {

constexpr double kChartWidth = 760;
constexpr double kChartHeight = 270;
constexpr double kLeft = 70, kRight = 20, kTop = 36, kBottom = 46;

constexpr char kStyle[] = R"(
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
td.text { text-align: left; font-family: monospace; white-space: pre-wrap; word-break: break-all; }
svg { display: block; margin: 0.5em 0 1.2em; }
svg text { font-size: 12px; fill: #333; }
svg .title { font-size: 14px; font-weight: bold; }
svg .axis { stroke: #333; stroke-width: 1; }
svg .grid { stroke: #e4e4e4; stroke-width: 1; }
)";

// One line of a chart; nullopt values leave a gap.
struct ChartLine {
  std::string name;
  std::string color;
  std::vector<std::optional<double>> values;
};

std::string Number(double value) { return absl::StrFormat("%.4g", value); }

std::string Milliseconds(const std::optional<absl::Duration>& duration) {
  if (!duration.has_value()) return "–";
  return absl::StrFormat("%.1f", absl::ToDoubleMilliseconds(*duration));
}

// A "nice" tick step (1, 2 or 5 × 10^k) giving about five ticks up to `maximum`.
double TickStep(double maximum) {
  if (!(maximum > 0)) return 1;
  const double rough = maximum / 5;
  const double magnitude = std::pow(10, std::floor(std::log10(rough)));
  for (double factor : {1.0, 2.0, 5.0}) {
    if (factor * magnitude >= rough) return factor * magnitude;
  }
  return 10 * magnitude;
}

std::string LineChart(const std::string& title, const std::string& y_label,
                      const std::vector<double>& x_seconds, const std::vector<ChartLine>& lines) {
  const double plot_width = kChartWidth - kLeft - kRight;
  const double plot_height = kChartHeight - kTop - kBottom;
  double y_max = 0;
  for (const ChartLine& line : lines) {
    for (const std::optional<double>& value : line.values) {
      if (value.has_value() && std::isfinite(*value)) y_max = std::max(y_max, *value);
    }
  }
  const double x_max = x_seconds.empty() ? 1 : std::max(x_seconds.back(), 1e-9);
  const double y_step = TickStep(y_max);
  const double y_top = std::max(y_step, std::ceil(y_max / y_step) * y_step);
  const double x_step = TickStep(x_max);
  const auto x_of = [&](double x) { return kLeft + plot_width * x / x_max; };
  const auto y_of = [&](double y) { return kTop + plot_height * (1 - y / y_top); };

  std::string svg = absl::StrFormat(
      "<svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">\n"
      "<title>%s</title>\n<text class=\"title\" x=\"%.0f\" y=\"18\">%s</text>\n",
      kChartWidth, kChartHeight, kChartWidth, kChartHeight, EscapeHtml(title), kLeft,
      EscapeHtml(title));
  for (double y = 0; y <= y_top + y_step / 2; y += y_step) {
    absl::StrAppendFormat(&svg,
                          "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                          kLeft, y_of(y), kLeft + plot_width, y_of(y), kLeft - 6, y_of(y) + 4,
                          Number(y));
  }
  for (double x = 0; x <= x_max + x_step / 1000; x += x_step) {
    absl::StrAppendFormat(&svg,
                          "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          x_of(x), kTop + plot_height, x_of(x), kTop + plot_height + 5, x_of(x),
                          kTop + plot_height + 18, Number(x));
  }
  absl::StrAppendFormat(
      &svg,
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
      "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time since start (s)</text>\n"
      "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
      kLeft, kTop, kLeft, kTop + plot_height, kLeft, kTop + plot_height, kLeft + plot_width,
      kTop + plot_height, kLeft + plot_width / 2, kChartHeight - 8, kTop + plot_height / 2,
      EscapeHtml(y_label));
  double legend_x = kLeft + plot_width;
  for (auto line = lines.rbegin(); line != lines.rend(); ++line) {
    legend_x -= 14 + 7.0 * static_cast<double>(line->name.size()) + 16;
    absl::StrAppendFormat(&svg,
                          "<rect x=\"%.1f\" y=\"9\" width=\"10\" height=\"10\" fill=\"%s\"/>"
                          "<text x=\"%.1f\" y=\"18\">%s</text>\n",
                          legend_x, line->color, legend_x + 14, EscapeHtml(line->name));
  }
  if (x_seconds.empty()) {
    absl::StrAppendFormat(&svg,
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no data</text>\n",
                          kLeft + plot_width / 2, kTop + plot_height / 2);
  }
  for (const ChartLine& line : lines) {
    std::vector<std::pair<double, double>> run;
    const auto flush = [&] {
      if (run.size() == 1) {
        absl::StrAppendFormat(&svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                              run[0].first, run[0].second, line.color);
      } else if (run.size() > 1) {
        std::string points;
        for (const auto& [x, y] : run) absl::StrAppendFormat(&points, "%.1f,%.1f ", x, y);
        absl::StrAppendFormat(&svg,
                              "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" "
                              "points=\"%s\"/>\n",
                              line.color, points);
      }
      run.clear();
    };
    for (size_t i = 0; i < line.values.size() && i < x_seconds.size(); ++i) {
      const std::optional<double>& value = line.values[i];
      if (value.has_value() && std::isfinite(*value)) {
        run.emplace_back(x_of(x_seconds[i]), y_of(*value));
      } else {
        flush();
      }
    }
    flush();
  }
  return svg + "</svg>\n";
}

// One value per window of the series.
std::vector<std::optional<double>> Column(
    const LoadReport& report, const std::function<std::optional<double>(const TimeWindow&)>& get) {
  std::vector<std::optional<double>> values;
  for (const TimeWindow& window : report.series) values.push_back(get(window));
  return values;
}

std::optional<double> InMilliseconds(const std::optional<absl::Duration>& duration) {
  if (!duration.has_value()) return std::nullopt;
  return absl::ToDoubleMilliseconds(*duration);
}

std::string Row(const std::vector<std::string>& cells, const char* tag = "td") {
  std::string row = "<tr>";
  for (const std::string& cell : cells) absl::StrAppend(&row, "<", tag, ">", cell, "</", tag, ">");
  return row + "</tr>\n";
}

std::string TextRow(const std::string& name, const std::string& text) {
  return absl::StrCat("<tr><td>", EscapeHtml(name), "</td><td class=\"text\">", EscapeHtml(text),
                      "</td></tr>\n");
}

std::string RunTable(const LoadReport& report) {
  const RunInfo& run = report.run;
  std::string table = "<table>\n";
  table += TextRow("scenario", run.scenario_name);
  table += TextRow("command", run.command_line);
  table += TextRow("protocol", run.protocol);
  table += TextRow("start (UTC)",
                   absl::FormatTime("%Y-%m-%d %H:%M:%S", run.start_wall_time, absl::UTCTimeZone()));
  table += TextRow("run length", absl::StrCat(Number(absl::ToDoubleSeconds(run.run_length)), " s"));
  table += TextRow("machine", run.machine_description);
  table +=
      TextRow("chart window", absl::StrCat(Number(absl::ToDoubleSeconds(report.window)), " s"));
  return table + "</table>\n";
}

std::string OutcomeTable(const OutcomeCounts& outcomes) {
  std::string table = "<table>\n";
  table += Row({"recorded", "ok", "rejected", "error", "timeout", "lost"}, "th");
  table += Row({absl::StrCat(outcomes.recorded), absl::StrCat(outcomes.ok),
                absl::StrCat(outcomes.rejected), absl::StrCat(outcomes.error),
                absl::StrCat(outcomes.timeout),
                outcomes.lost.has_value() ? absl::StrCat(*outcomes.lost) : "–"});
  return table + "</table>\n";
}

std::string LatencyTable(const LatencySummary& latency) {
  std::string table = "<table>\n";
  table += Row({"milliseconds", "count", "p50", "p90", "p99", "max"}, "th");
  const std::pair<const char*, const DurationPercentiles*> rows[] = {
      {"time to first token", &latency.time_to_first_token},
      {"time to first output token", &latency.time_to_first_output_token},
      {"inter-token latency", &latency.inter_token_latency},
      {"time per output token", &latency.time_per_output_token},
      {"end to end", &latency.end_to_end},
      {"rejection latency", &latency.rejection_latency},
  };
  for (const auto& [name, percentiles] : rows) {
    table += Row({name, absl::StrCat(percentiles->count), Milliseconds(percentiles->p50),
                  Milliseconds(percentiles->p90), Milliseconds(percentiles->p99),
                  Milliseconds(percentiles->max)});
  }
  return table + "</table>\n";
}

std::string SloText(const std::optional<absl::Duration>& target) {
  return target.has_value() ? absl::StrCat("≤ ", Milliseconds(target), " ms") : "not set";
}

std::string ThroughputTable(const LoadReport& report) {
  const Throughput& throughput = report.throughput;
  const SloTargets& slo = report.slo;
  std::string table = "<table>\n";
  table += Row({"over", absl::StrCat(Number(absl::ToDoubleSeconds(throughput.duration)), " s")});
  table += Row({"ok requests / s", Number(throughput.ok_requests_per_second)});
  table += Row({"output tokens / s", Number(throughput.output_tokens_per_second)});
  table += Row({"goodput requests / s", Number(throughput.goodput_requests_per_second)});
  table += Row({"goodput output tokens / s", Number(throughput.goodput_output_tokens_per_second)});
  table += Row({"ok requests meeting SLOs",
                absl::StrFormat("%d (%.1f%%)", throughput.ok_requests_meeting_slo,
                                100 * throughput.fraction_of_ok_meeting_slo)});
  table += Row({"SLO: time to first token",
                SloText(slo.ttft == absl::InfiniteDuration() ? std::nullopt
                                                             : std::make_optional(slo.ttft))});
  table += Row({"SLO: time to first output token", SloText(slo.time_to_first_output_token)});
  table += Row({"SLO: p99 inter-token latency", SloText(slo.inter_token_latency_p99)});
  table += Row({"SLO: end to end", SloText(slo.end_to_end)});
  return table + "</table>\n";
}

std::string Charts(const LoadReport& report) {
  std::vector<double> x_seconds;
  for (const TimeWindow& window : report.series) {
    x_seconds.push_back(absl::ToDoubleSeconds(window.end));
  }
  const auto field = [&](double TimeWindow::*member) {
    return Column(report, [member](const TimeWindow& w) { return std::optional(w.*member); });
  };
  std::string charts;
  charts += LineChart("Arrival and completion rate", "requests / s", x_seconds,
                      {{"arrivals", "#1f77b4", field(&TimeWindow::arrivals_per_second)},
                       {"completions", "#2ca02c", field(&TimeWindow::completions_per_second)},
                       {"goodput", "#9467bd", field(&TimeWindow::goodput_requests_per_second)}});
  charts += LineChart(
      "Output tokens", "tokens / s", x_seconds,
      {{"all ok requests", "#2ca02c", field(&TimeWindow::output_tokens_per_second)},
       {"meeting the SLOs", "#9467bd", field(&TimeWindow::goodput_output_tokens_per_second)}});
  charts += LineChart("In flight (at window end)", "requests", x_seconds,
                      {{"in flight", "#ff7f0e", Column(report, [](const TimeWindow& w) {
                          return std::optional(static_cast<double>(w.in_flight));
                        })}});
  charts += LineChart(
      "Time to first token (by send time)", "milliseconds", x_seconds,
      {{"p50", "#1f77b4",
        Column(report,
               [](const TimeWindow& w) { return InMilliseconds(w.time_to_first_token_p50); })},
       {"p99", "#d62728", Column(report, [](const TimeWindow& w) {
          return InMilliseconds(w.time_to_first_token_p99);
        })}});
  charts += LineChart(
      "Server queue (router /metrics)", "requests", x_seconds,
      {{"queued", "#d62728", Column(report, [](const TimeWindow& w) { return w.queued_requests; })},
       {"running", "#2ca02c",
        Column(report, [](const TimeWindow& w) { return w.running_requests; })}});
  charts += LineChart("Rejections and failures", "requests / s", x_seconds,
                      {{"rejected", "#d62728", field(&TimeWindow::rejections_per_second)},
                       {"error or timeout", "#7f7f7f", field(&TimeWindow::failures_per_second)}});
  charts += LineChart("KV cache usage (mean over replicas)", "percent", x_seconds,
                      {{"KV usage", "#8c564b", Column(report, [](const TimeWindow& w) {
                          return w.kv_cache_usage_ratio.has_value()
                                     ? std::optional(100 * *w.kv_cache_usage_ratio)
                                     : std::nullopt;
                        })}});
  return charts;
}

}  // namespace

std::string EscapeHtml(const std::string& text) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        escaped += "&amp;";
        break;
      case '<':
        escaped += "&lt;";
        break;
      case '>':
        escaped += "&gt;";
        break;
      case '"':
        escaped += "&quot;";
        break;
      case '\'':
        escaped += "&#39;";
        break;
      default:
        escaped += c;
    }
  }
  return escaped;
}

std::string ToHtml(const LoadReport& report) {
  const std::string title = absl::StrCat("reflect-loadtest: ", report.run.scenario_name);
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>",
      EscapeHtml(title), "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n<h1>",
      EscapeHtml(title), "</h1>\n<h2>Run</h2>\n", RunTable(report), "<h2>Outcomes</h2>\n",
      OutcomeTable(report.outcomes), "<h2>Latency (ok requests; rejections apart)</h2>\n",
      LatencyTable(report.latency), "<h2>Throughput and goodput</h2>\n", ThroughputTable(report),
      "<h2>Over time</h2>\n", Charts(report), "</body>\n</html>\n");
}

}  // namespace reflect::loadtest
