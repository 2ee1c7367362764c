// ReplicaMetrics: a replica leader's Prometheus metrics (DESIGN §8, docs/metrics.md), served on
// reflect-worker's --metrics_port by a prometheus::Exposer.
//
// Two sources, and no thread of its own:
//   - ObserveStep, wired to EngineLoopOptions::on_step, feeds the histograms
//     reflect_step_duration_seconds and reflect_batch_size (sequences per step) on the engine
//     thread;
//   - every scrape first refreshes the gauges and counters from one EngineLoop::Load() snapshot
//     (collectable() does it before collecting): reflect_num_requests_running / _waiting,
//     reflect_kv_cache_usage_ratio, reflect_kv_cache_blocks{state}, and the counters
//     reflect_prefix_cache_queries_total / _hits_total (tokens), reflect_preemptions_total{mode},
//     reflect_requests_rejected_total{reason="queue_full"}. The engine keeps running totals; a
//     Prometheus counter can only be incremented, so each refresh adds the growth since the
//     previous snapshot.
// Every series carries model_name.
//
// Ownership: owns its registry; holds the engine without owning it, from AttachEngine until
// AttachEngine(nullptr). Thread-safety: ObserveStep is a couple of short-locked histogram
// updates (prometheus-cpp), safe on the engine thread; Refresh, AttachEngine, Serialize and
// scrapes may run on any threads at once (a mutex orders refreshes, and AttachEngine(nullptr)
// returns only once no refresh uses the old engine). Cost: a scrape is one Load() (a short
// engine mutex) plus O(series).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "worker/engine_loop.h"

namespace prometheus {
class Collectable;
class Registry;
}  // namespace prometheus

namespace reflect {

class ReplicaMetrics {
 public:
  explicit ReplicaMetrics(std::string model_name);
  ~ReplicaMetrics();
  ReplicaMetrics(const ReplicaMetrics&) = delete;
  ReplicaMetrics& operator=(const ReplicaMetrics&) = delete;

  // The engine a scrape reads its load from; null detaches (before the engine is destroyed).
  // Until one is attached the gauges and counters stay at zero.
  void AttachEngine(const EngineLoop* engine);

  // One engine step (EngineLoopOptions::on_step).
  void ObserveStep(const StepStats& step);

  // Sets the gauges and advances the counters to `load`.
  void Refresh(const EngineLoad& load);

  // Refreshes from the attached engine, then returns the Prometheus text format.
  std::string Serialize();

  // What an Exposer registers: refreshes from the attached engine, then collects the registry.
  // Shares ownership of the registry, and refers to this object, which must outlive it.
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  prometheus::Registry& registry() { return *registry_; }

 private:
  struct Series;
  void RefreshFromEngine();
  void ApplyLocked(const EngineLoad& load);  // mutex_ held

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Series> series_;
  std::shared_ptr<prometheus::Collectable> collectable_;

  std::mutex mutex_;                    // orders refreshes and engine attachment
  const EngineLoop* engine_ = nullptr;  // guarded by mutex_
  EngineLoad last_load_;                // guarded by mutex_: the running totals last counted
};

}  // namespace reflect
