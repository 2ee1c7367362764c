// One admitted request between Submit and its end (DESIGN §1, §7, §8): the replica stream (or
// streams, when a replica refuses before the first token), the generation pipeline, the sink,
// and the request's timings, usage and admission accounting.
//
// Lifecycle:
//
//   Start(replica) ──▶ queued ──first token──▶ running ──replica finish──▶ ended OK
//     │    ▲             │                        ├──stop string──▶ ended OK (stream cancelled)
//     │    └─RESOURCE_EXHAUSTED, another replica──┤  (before the first token only)
//     │                  │                        └──error, cancel, stream broken──▶ ended !OK
//     └──────────────────┴──▶ ended (RESOURCE_EXHAUSTED when no replica is left)
//                        │
//                        └──max_queue_time passed──▶ stream cancelled ──▶ ended RESOURCE_EXHAUSTED
//                                                    (with a retry hint from admission)
//
// The queue-time deadline (AdmissionLimits.max_queue_time, counted from Start) is a DeadlineTimer
// entry of the router's one timer thread, dropped at the first token or the end.
//
// "Ended" is when the sink gets OnFinished; the request is done (RouterServices::request_done)
// once its last stream has closed as well, which a stop string makes slightly later.
//
// Ownership: shared by its current stream (as observer, until OnClosed) and the router's in-flight
// registry (weakly); it holds the sink until OnFinished. Thread-safety: stream events come one at a
// time (one stream at a time, each stream's events serial), so pipeline, sink and timings are
// touched by one thread at a time without a lock; Cancel may come from any thread and only takes
// the short mutex. Cost: one pipeline step and at most one sink call per replica message.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/tokenizer.h"
#include "router/admission.h"
#include "router/generation_pipeline.h"
#include "router/replica_choice.h"
#include "router/replica_client.h"
#include "router/replica_pool.h"
#include "router/request_router.h"
#include "router/router_metrics.h"

namespace reflect {

// Runs callbacks at given times on one thread of its own (started by the first Schedule), so that
// a deadline per request costs a map entry, not a thread. Thread-safety: every method may be
// called from any thread, callbacks included (they run without the timer's lock). The destructor
// joins the thread; callbacks not yet started never run. Cost: O(log n) per Schedule and Cancel.
class DeadlineTimer {
 public:
  struct Key {
    absl::Time when;
    uint64_t id = 0;
  };

  DeadlineTimer() = default;
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;
  ~DeadlineTimer();

  // Runs `callback` on the timer thread at `when` (or as soon after as the thread gets to it),
  // unless Cancel(key) comes first.
  Key Schedule(absl::Time when, std::function<void()> callback);
  // After this returns the callback of `key` does not start (it may be running already, or done).
  void Cancel(const Key& key);

 private:
  void Run();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> entries_;  // guarded
  uint64_t next_id_ = 0;                                                      // guarded
  bool stopping_ = false;                                                     // guarded
  std::thread thread_;  // started by the first Schedule, under mutex_
};

// What requests share with their router. Outlives every request (the router waits for them).
struct RouterServices {
  RouterServices(ReplicaPool& pool, AdmissionController& admission, const Tokenizer& tokenizer,
                 RouterMetrics* metrics)
      : pool(pool), admission(admission), tokenizer(tokenizer), metrics(metrics) {}

  ReplicaPool& pool;
  AdmissionController& admission;
  const Tokenizer& tokenizer;
  RouterMetrics* const metrics;  // may be null
  ReplicaChoiceOptions choice_options;
  // Set when the router is being destroyed: cancelled requests end UNAVAILABLE, not CANCELLED,
  // and nothing is retried.
  std::atomic<bool> shutting_down{false};
  // Called by each request as the very last thing it does with these services.
  std::function<void(uint64_t request_number)> request_done;
  // Queue-time deadlines of the requests (AdmissionLimits.max_queue_time). Last member: destroyed
  // (its thread joined) first, while everything a callback may touch is still there.
  DeadlineTimer queue_timer;
};

// The best replica in rotation for `prompt_token_ids`, skipping `excluded[index]`; nullopt when
// none is in rotation.
std::optional<size_t> PickReplica(const RouterServices& services,
                                  const std::vector<int32_t>& prompt_token_ids,
                                  const std::vector<bool>& excluded);

class InFlightRequest final : public ReplicaStreamObserver,
                              public std::enable_shared_from_this<InFlightRequest> {
 public:
  // `request_number` names it in the registry. Already counted as queued by admission.
  InFlightRequest(RouterServices& services, uint64_t request_number, RoutedRequest request,
                  std::shared_ptr<ResponseSink> sink);

  // Arms the queue-time deadline and opens the first stream, to replica `replica_index` of the
  // pool. Called once.
  void Start(size_t replica_index);

  // Client cancellation (idempotent; no effect after the end). The sink gets CANCELLED once the
  // replica stream has closed (UNAVAILABLE while the router shuts down).
  void Cancel();

  void OnMessage(ReplicaMessage message) override;
  void OnClosed(const absl::Status& status) override;

 private:
  void OpenStream(size_t replica_index);
  // The queue-time deadline passed (timer thread): unless the first token came or the request
  // ended, marks it timed out and cancels its stream, whose close then ends it.
  void QueueTimeout();
  bool queue_timed_out();
  // RESOURCE_EXHAUSTED "waited … in the queue without being scheduled" with a retry hint.
  absl::Status QueueTimeoutError() const;
  // Ends the request (once): admission, metrics, the sink's OnFinished.
  void End(const absl::StatusOr<GenerationOutcome>& outcome);
  GenerationOutcome Outcome(GenerationStopReason reason) const;
  // Why a stream that ended without a finish ended, as the client should see it; may retry.
  void HandleFailure(const absl::Status& status);

  RouterServices& services_;
  const uint64_t request_number_;
  const RoutedRequest request_;
  GenerationPipeline pipeline_;

  // Touched only by stream events (serial, see above).
  std::shared_ptr<ResponseSink> sink_;  // until End
  bool ended_ = false;
  size_t replica_index_ = 0;      // of the current stream
  std::vector<bool> refused_by_;  // replicas that answered RESOURCE_EXHAUSTED
  std::optional<absl::Duration> replica_retry_after_;
  absl::Time stream_start_time_;  // when the current stream was started
  std::optional<absl::Time> first_token_time_;
  std::optional<absl::Time> first_output_time_;
  absl::Time last_token_time_;
  int32_t last_token_id_ = 0;
  std::optional<ReplicaFinish> finish_;
  // Set in Start before the first stream opens, then only read.
  absl::Time admitted_time_;
  std::optional<DeadlineTimer::Key> queue_deadline_;

  std::mutex mutex_;
  std::shared_ptr<ReplicaStream> stream_;  // guarded: the current stream
  bool cancel_requested_ = false;          // guarded: by the client (Cancel)
  bool left_queue_ = false;                // guarded: first token or end (no timeout after it)
  bool queue_timed_out_ = false;           // guarded: QueueTimeout cancelled the stream
};

}  // namespace reflect
