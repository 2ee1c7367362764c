// RouterMetrics: the router's Prometheus metrics (DESIGN §8), through prometheus-cpp. Names,
// labels and buckets are in docs/metrics.md; buckets reach an hour (common/metrics.h).
//
// Recorded here: reflect_requests_total{outcome}, reflect_prompt_tokens_total,
// reflect_generation_tokens_total{section}, reflect_requests_rejected_total{reason},
// reflect_num_requests_running / _waiting (the router's view: queued = waiting), and the
// histograms reflect_time_to_first_token_seconds, reflect_time_to_first_output_token_seconds,
// reflect_inter_token_latency_seconds, reflect_e2e_request_latency_seconds,
// reflect_request_queue_time_seconds, and reflect_reflections_per_request (DESIGN §7 counts
// reflections per request). Every series carries model_name. Every label value a method can
// produce is created up front, so each series exists (at 0) from the first scrape and rate()
// sees its first increase.
//
// Thread-safety: every method may be called from any thread (prometheus-cpp's metrics are
// atomic). Cost: a few atomic adds per call; Serialize is O(series).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "router/generation_output.h"

namespace prometheus {
class Registry;
}

namespace reflect {

struct RouterLoad;

class RouterMetrics {
 public:
  explicit RouterMetrics(std::string model_name);
  ~RouterMetrics();
  RouterMetrics(const RouterMetrics&) = delete;
  RouterMetrics& operator=(const RouterMetrics&) = delete;

  // A request refused before it reached a replica. `reason`: "queue_full", "no_replica",
  // "invalid_request", "unauthenticated", "not_found".
  void RequestRejected(std::string_view reason);

  // A request that reached a replica ended: outcome label "ok" for a normal end, else the
  // status code in snake case ("cancelled", "deadline_exceeded", "unavailable",
  // "resource_exhausted", "invalid_argument", "internal"); with an OK outcome also the token
  // counters and the latency histograms.
  void RequestFinished(const absl::StatusOr<GenerationOutcome>& outcome);

  // Time between two consecutive tokens of one request, as the router received them.
  void ObserveInterTokenLatency(double seconds);

  // Sets the queue gauges from the router's counts (called before each scrape).
  void SetLoad(const RouterLoad& load);

  // Everything in the Prometheus text format (for GET /metrics).
  std::string Serialize() const;

  prometheus::Registry& registry();

 private:
  struct Families;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> families_;
  std::string model_name_;
};

}  // namespace reflect
