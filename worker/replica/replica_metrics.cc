#include "worker/replica/replica_metrics.h"

#include <algorithm>
#include <utility>

#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace reflect {
namespace {

// Adds the growth of an engine running total since the last snapshot. Never negative: a total
// that went backwards (a new engine attached) is not advanced, and its later growth counts from
// the new value.
void Advance(prometheus::Counter& counter, int64_t now, int64_t before) {
  if (now > before) counter.Increment(static_cast<double>(now - before));
}

}  // namespace

// Every series resolved once at construction, so refreshes and steps never look labels up.
struct ReplicaMetrics::Series {
  prometheus::Gauge* running = nullptr;
  prometheus::Gauge* waiting = nullptr;
  prometheus::Gauge* kv_usage = nullptr;
  prometheus::Gauge* kv_used = nullptr;
  prometheus::Gauge* kv_free = nullptr;
  prometheus::Gauge* kv_cached = nullptr;
  prometheus::Counter* prefix_queries = nullptr;
  prometheus::Counter* prefix_hits = nullptr;
  prometheus::Counter* preempted_recompute = nullptr;
  prometheus::Counter* preempted_swap = nullptr;
  prometheus::Counter* rejected_queue_full = nullptr;
  prometheus::Histogram* step_duration = nullptr;
  prometheus::Histogram* batch_size = nullptr;
};

ReplicaMetrics::ReplicaMetrics(std::string model_name)
    : registry_(std::make_shared<prometheus::Registry>()), series_(std::make_unique<Series>()) {
  const prometheus::Labels model = {{kModelNameLabel, model_name}};
  auto with = [&](const char* name, const char* value) {
    prometheus::Labels labels = model;
    labels[name] = value;
    return labels;
  };
  prometheus::Registry& registry = *registry_;
  Series& series = *series_;

  series.running = &prometheus::BuildGauge()
                        .Name("reflect_num_requests_running")
                        .Help(
                            "Requests the replica's scheduler is running (prefilling or "
                            "decoding, preempted ones included).")
                        .Register(registry)
                        .Add(model);
  series.waiting = &prometheus::BuildGauge()
                        .Name("reflect_num_requests_waiting")
                        .Help("Requests accepted by the replica and waiting to be scheduled.")
                        .Register(registry)
                        .Add(model);
  series.kv_usage = &prometheus::BuildGauge()
                         .Name("reflect_kv_cache_usage_ratio")
                         .Help(
                             "Fraction of the replica's KV cache blocks referenced by "
                             "sequences (0 to 1); cached unreferenced blocks count as free.")
                         .Register(registry)
                         .Add(model);
  auto& blocks = prometheus::BuildGauge()
                     .Name("reflect_kv_cache_blocks")
                     .Help(
                         "KV cache blocks by state: used (referenced by a sequence), cached "
                         "(unreferenced, holding a reusable prefix), free (empty); they sum "
                         "to the pool size.")
                     .Register(registry);
  series.kv_used = &blocks.Add(with("state", "used"));
  series.kv_free = &blocks.Add(with("state", "free"));
  series.kv_cached = &blocks.Add(with("state", "cached"));

  series.prefix_queries = &prometheus::BuildCounter()
                               .Name("reflect_prefix_cache_queries_total")
                               .Help("Prompt tokens looked up in the prefix cache.")
                               .Register(registry)
                               .Add(model);
  series.prefix_hits = &prometheus::BuildCounter()
                            .Name("reflect_prefix_cache_hits_total")
                            .Help("Prompt tokens found in the prefix cache (their KV reused).")
                            .Register(registry)
                            .Add(model);
  auto& preemptions = prometheus::BuildCounter()
                          .Name("reflect_preemptions_total")
                          .Help("Sequences preempted for lack of KV blocks, by mode.")
                          .Register(registry);
  series.preempted_recompute = &preemptions.Add(with("mode", "recompute"));
  series.preempted_swap = &preemptions.Add(with("mode", "swap"));
  series.rejected_queue_full = &prometheus::BuildCounter()
                                    .Name("reflect_requests_rejected_total")
                                    .Help("Requests the replica refused, by reason.")
                                    .Register(registry)
                                    .Add(with("reason", "queue_full"));

  series.step_duration = &prometheus::BuildHistogram()
                              .Name("reflect_step_duration_seconds")
                              .Help("Wall time of one engine step: schedule, forward, sample.")
                              .Register(registry)
                              .Add(model, TokenLatencyBuckets());
  series.batch_size = &prometheus::BuildHistogram()
                           .Name("reflect_batch_size")
                           .Help("Sequences in one engine step (prefill chunks and decodes).")
                           .Register(registry)
                           .Add(model, BatchSizeBuckets());

  collectable_ =
      std::make_shared<RefreshingCollectable>(registry_, [this] { RefreshFromEngine(); });
}

ReplicaMetrics::~ReplicaMetrics() = default;

void ReplicaMetrics::AttachEngine(const EngineLoop* engine) {
  std::lock_guard<std::mutex> lock(mutex_);
  engine_ = engine;
}

void ReplicaMetrics::ObserveStep(const StepStats& step) {
  series_->step_duration->Observe(step.duration_seconds);
  series_->batch_size->Observe(static_cast<double>(step.sequences));
}

void ReplicaMetrics::Refresh(const EngineLoad& load) {
  std::lock_guard<std::mutex> lock(mutex_);
  ApplyLocked(load);
}

void ReplicaMetrics::ApplyLocked(const EngineLoad& load) {
  Series& series = *series_;
  series.running->Set(static_cast<double>(load.running_requests));
  series.waiting->Set(static_cast<double>(load.waiting_requests));
  series.kv_usage->Set(load.kv_blocks_total > 0 ? static_cast<double>(load.kv_blocks_used) /
                                                      static_cast<double>(load.kv_blocks_total)
                                                : 0.0);
  series.kv_used->Set(static_cast<double>(load.kv_blocks_used));
  series.kv_free->Set(static_cast<double>(load.kv_blocks_free));
  series.kv_cached->Set(static_cast<double>(load.kv_blocks_cached));
  Advance(*series.prefix_queries, load.prefix_cache_queried_tokens,
          last_load_.prefix_cache_queried_tokens);
  Advance(*series.prefix_hits, load.prefix_cache_hit_tokens, last_load_.prefix_cache_hit_tokens);
  Advance(*series.preempted_recompute, load.preemptions_by_recompute,
          last_load_.preemptions_by_recompute);
  Advance(*series.preempted_swap, load.preemptions_by_swap, last_load_.preemptions_by_swap);
  Advance(*series.rejected_queue_full, load.requests_rejected_queue_full,
          last_load_.requests_rejected_queue_full);
  last_load_ = load;
}

void ReplicaMetrics::RefreshFromEngine() {
  // Load() runs under the mutex so that AttachEngine(nullptr) waits for a scrape still using the
  // engine, and so that two scrapes apply their snapshots in the order they took them.
  std::lock_guard<std::mutex> lock(mutex_);
  if (engine_ != nullptr) ApplyLocked(engine_->Load());
}

std::string ReplicaMetrics::Serialize() {
  RefreshFromEngine();
  return SerializeMetrics(*registry_);
}

}  // namespace reflect
