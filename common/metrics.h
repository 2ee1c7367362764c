// Shared pieces of the Prometheus metrics (DESIGN §8, docs/metrics.md): the bucket sets every
// process uses, the label every series carries, text serialization, and a collectable that
// refreshes its gauges right before each scrape.
//
// Buckets are shared so that the router's and the replicas' histograms of the same kind can be
// aggregated and compared in PromQL; they reach an hour because a reflection request can think for
// that long.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Registry;
}

namespace reflect {

// The label that names the served model on every series.
inline constexpr char kModelNameLabel[] = "model_name";

// Upper bounds (seconds) for request-scale durations — time to first token, end-to-end latency,
// queue time: from 1 ms to 3600 s, roughly 1-2.5-5 per decade, denser in the minutes where long
// reflection traces end.
std::vector<double> RequestLatencyBuckets();

// Upper bounds (seconds) for per-token durations — inter-token latency, engine step duration:
// finer between 1 ms and 1 s, where decode steps live, then sparse up to 3600 s so a stall (a
// swap-in, a long prefill chunk) still lands in a finite bucket.
std::vector<double> TokenLatencyBuckets();

// Upper bounds for a step's batch size in sequences: powers of two from 1 to 1024.
std::vector<double> BatchSizeBuckets();

// Upper bounds for small per-request counts (reflections per request): 0, 1, 2, 3, 5, 8, …, 89.
std::vector<double> SmallCountBuckets();

// The registry's metrics in the Prometheus text exposition format (version 0.0.4).
std::string SerializeMetrics(const prometheus::Registry& registry);

// RefreshingCollectable: what an Exposer (or a hand-written /metrics handler) collects — runs
// `refresh` (which sets gauges and counters from a load snapshot) and then collects `registry`,
// so the values are fresh at every scrape without a polling thread.
//
// Thread-safety: Collect may run on several scrape threads at once, so `refresh` must be safe to
// call concurrently. Cost: one refresh plus the registry's Collect per scrape.
class RefreshingCollectable : public prometheus::Collectable {
 public:
  RefreshingCollectable(std::shared_ptr<prometheus::Registry> registry,
                        std::function<void()> refresh);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> refresh_;
};

}  // namespace reflect
