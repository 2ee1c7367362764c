// The load tester's report as one self-contained HTML page (issue #6): inline CSS and inline SVG
// charts drawn here, no scripts, fonts, images or links to fetch, so the file opens offline and
// can be committed as is. Summary tables (run, outcomes, latency percentiles, throughput,
// goodput, SLOs) followed by charts over time: arrival and completion rates, in flight, TTFT
// p50/p99, queue depth, rejections and KV cache usage. Every piece of text from the report is
// HTML-escaped. Pure function; thread-compatible.
#pragma once

#include <string>

#include "loadtest/report.h"

namespace reflect::loadtest {

std::string ToHtml(const LoadReport& report);

// `text` with &, <, >, " and ' replaced by character references.
std::string EscapeHtml(const std::string& text);

}  // namespace reflect::loadtest
