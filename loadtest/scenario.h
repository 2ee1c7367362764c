// Scenario files: a named load test, stored as JSON under loadtest/scenarios/ (see that folder's
// files for examples). Reading is strict: an unknown key, a value of the wrong type or one out of
// range is an InvalidArgument error naming the key (as a path, e.g. "arrivals.spike_multiplier").
//
// Document layout (keys marked ? are optional):
//   name, description, rate_scale_note?  strings
//   protocol                             "grpc" | "http"
//   mode                                 "open" | "closed"
//   run_length_seconds                   number > 0
//   max_requests?                        integer in [1, 10^9]: send at most this many; the run
//                                        stops sending at the count or the run length, whichever
//                                        comes first (fixed-count runs, like guidellm's
//                                        max_requests or vLLM's --num-prompts)
//   seed?                                integer ≥ 0 (default 1): arrivals and request plans
//   arrivals      (open mode only)       {profile: "constant" | "step_spike" | "linear_ramp",
//                                         requests_per_second, end_requests_per_second (ramp),
//                                         spike_multiplier, spike_start_seconds,
//                                         spike_duration_seconds (spike), spacing?
//                                         ("random" | "even"; default "random"), burstiness?
//                                         (1; random spacing only)}
//   concurrency   (closed mode only)     integer in [1, 100000]
//   workload                             {prompt_tokens?, output_tokens?: length distributions,
//                                         add_reflection_system_prompt?, temperature?,
//                                         sampling_seed?, high_priority_fraction?, high_priority?}
//       length distribution              {kind: "fixed", tokens} | {kind: "uniform", minimum,
//                                         maximum} | {kind: "lognormal", median, sigma, minimum,
//                                         maximum}
//   slo                                  {ttft_seconds, time_to_first_output_token_seconds?,
//                                         inter_token_latency_seconds (a p99 target),
//                                         e2e_seconds?}
//   client_timeout_seconds               number > 0
// Rates are absolute requests per second; the load tester scales them with --rate-scale.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "loadtest/arrivals.h"
#include "loadtest/workload.h"

namespace reflect::loadtest {

enum class Protocol { kGrpc, kHttp };

enum class LoopMode {
  kOpen,    // requests sent at planned times, whatever the server does
  kClosed,  // a fixed number of requests in flight; each answer sends the next
};

// The targets a request must meet to count toward goodput.
struct ServiceLevelObjectives {
  absl::Duration time_to_first_token = absl::ZeroDuration();
  std::optional<absl::Duration> time_to_first_output_token;
  absl::Duration inter_token_latency_p99 = absl::ZeroDuration();
  std::optional<absl::Duration> end_to_end;
};

struct Scenario {
  std::string name;
  std::string description;
  std::string rate_scale_note;  // what the rates were sized for; empty when the file has none
  Protocol protocol = Protocol::kGrpc;
  LoopMode mode = LoopMode::kOpen;
  absl::Duration run_length = absl::ZeroDuration();
  std::optional<int64_t> max_requests;  // no limit but the run length when empty
  uint64_t seed = 1;
  ArrivalPattern arrivals;  // kOpen only
  int32_t concurrency = 0;  // kClosed only
  WorkloadSpec workload;
  ServiceLevelObjectives slo;
  absl::Duration client_timeout = absl::ZeroDuration();
};

// Parses one scenario document; `source` names it in error messages.
absl::StatusOr<Scenario> ParseScenario(absl::string_view json_text,
                                       absl::string_view source = "scenario");

// Reads and parses the file at `path` (NotFound when it cannot be opened).
absl::StatusOr<Scenario> LoadScenario(const std::filesystem::path& path);

}  // namespace reflect::loadtest
