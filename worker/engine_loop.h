// EngineLoop: the replica leader's runtime (DESIGN §1, §4, §11) — one thread that turns queued
// requests into steps: apply queued commands (add, cancel), Schedule(now),
// Backend::ForwardAndSample (one token per row that needs logits, with SampleToken's semantics at
// the sequence's position), ApplyStepResult, then deliver tokens and outcomes to each request's
// GenerationSink.
//
// Lifecycle of the loop (one way):
//
//   kServing ──BeginDrain──▶ kDraining ──last request done──▶ kDrained
//       │                        │                                │
//       └────────────────────────┴──────────Stop / destructor─────┴──▶ kStopped
//
// kServing accepts requests; kDraining and later answer Submit with UNAVAILABLE "draining" while
// in-flight requests run to the end; Stop ends whatever is left with UNAVAILABLE.
//
// Prefix-cache summary (for GetLoad's prefix affinity): between steps the engine thread rebuilds a
// Bloom filter of the computed cached blocks' hashes, only when the cache changed and at most once
// per prefix_summary_interval, and publishes it as an immutable shared_ptr, so readers copy a
// pointer under the mutex, never the filter, and never see one half built.
//
// Ownership: owns the Backend, the Scheduler (and through it the BlockManager), each request's
// sampling state and a shared reference to its sink until OnFinished. Thread-safety: Submit,
// Cancel, Force, BeginDrain, WaitUntilDrained, Load, PrefixCacheSummary and Stop may be called
// from any thread; they take a short mutex and never wait for a step (WaitUntilDrained waits by
// design). Sinks run on the engine thread. Cost: a command costs a queue push; each step is one
// Forward plus O(batch) bookkeeping; an idle loop sleeps on a condition variable, waking every
// heartbeat interval (or sooner when a summary rebuild is due). A summary rebuild scans the block
// states and sets k bits per computed block: 0.6-0.9 ms for 50 000 blocks on a 2-core VM, at most
// once per interval and never while the cache is unchanged.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/prefix_summary.h"
#include "common/sampling_params.h"
#include "scheduler/scheduler.h"
#include "worker/backend.h"
#include "worker/generation_sink.h"

namespace reflect {

// What one engine step did, for metrics (reflect_step_duration_seconds, reflect_batch_size).
struct StepStats {
  int64_t sequences = 0;          // sequences in the step (prefill chunks and decodes)
  int64_t tokens = 0;             // tokens the step computed
  double duration_seconds = 0.0;  // wall time of schedule, forward and sampling
};

struct EngineLoopOptions {
  SchedulerConfig scheduler;    // max_model_length: the model's context length
  int32_t num_host_blocks = 0;  // swap space; must equal the backend's host pool
  bool enable_prefix_caching = true;
  std::vector<int32_t> eos_token_ids;  // the model's; ignored by requests with ignore_eos
  // How often an idle loop wakes to refresh its liveness timestamp.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Called on the engine thread after every step that ran; must not block. Unset: nothing.
  std::function<void(const StepStats&)> on_step;
  // The prefix-cache summary (PrefixCacheSummary): its Bloom filter size (0: no summary), probes
  // per hash, and the least time between two rebuilds. 64 KiB and 7 probes hold 50 000 blocks at
  // about 0.65% false positives.
  int64_t prefix_summary_bytes = 64 * 1024;
  int32_t prefix_summary_probes = 7;
  absl::Duration prefix_summary_interval = absl::Milliseconds(100);
};

// One request as the engine takes it (validated by the router; the loop re-checks what a bad
// value would make fail for everyone, such as token ids outside the vocabulary).
struct EngineRequest {
  std::vector<int32_t> prompt_token_ids;
  // Failover: tokens another replica generated. They are prefilled after the prompt, count
  // against sampling.max_tokens, and the next token is generated at index size().
  std::vector<int32_t> generated_token_ids;
  SamplingParams sampling;
  int32_t priority = 0;
  absl::Time deadline = absl::InfiniteFuture();
};

// A consistent snapshot of the loop's load, for GetLoad and metrics.
struct EngineLoad {
  bool accepting = false;
  int64_t running_requests = 0;
  int64_t waiting_requests = 0;  // queued in the scheduler or not yet taken by the loop
  int64_t waiting_prompt_tokens = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;
  int64_t kv_blocks_cached = 0;  // unreferenced, still holding a cached prefix
  int64_t kv_blocks_free = 0;
  int64_t prefix_cache_queried_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t preemptions_by_recompute = 0;
  int64_t preemptions_by_swap = 0;
  int64_t requests_rejected_queue_full = 0;
  int64_t steps = 0;
  double last_step_seconds = 0.0;  // wall time of the last step (schedule, forward, sample)
  absl::Time last_progress = absl::InfinitePast();  // the loop's last iteration (liveness)
};

class EngineLoop {
 public:
  // Starts the engine thread. INVALID_ARGUMENT for a scheduler config the Scheduler refuses.
  static absl::StatusOr<std::unique_ptr<EngineLoop>> Create(std::unique_ptr<Backend> backend,
                                                            const EngineLoopOptions& options);
  ~EngineLoop();  // Stop()
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Queues a request and returns its handle (for Cancel and Force). Answers at once, without the
  // sink: UNAVAILABLE while draining or stopped; INVALID_ARGUMENT for an empty prompt, ids
  // outside the vocabulary, max_tokens not above the failover tokens, or a prompt beyond the
  // model length; RESOURCE_EXHAUSTED when the waiting queue is full. Once accepted, the sink
  // gets every event; it may get them before Submit returns.
  absl::StatusOr<int64_t> Submit(EngineRequest request, std::shared_ptr<GenerationSink> sink);
  // Ends the sequence within one step, freeing its KV blocks; its sink gets CANCELLED. Unknown
  // or finished ids are ignored.
  void Cancel(int64_t handle);
  // Makes the request continue from `token_ids` placed at generated index `at_index` (the
  // router's thinking budget, replica.proto ForceTokens): tokens generated from at_index on are
  // dropped, the forced ones are delivered to the sink (logprob 0, no alternatives) as if sampled,
  // and sampling resumes after them at their absolute positions. Implemented as cancel + re-add of
  // prompt + kept + forced tokens, so the prefix cache makes the re-prefill cheap. The sink
  // gets INVALID_ARGUMENT when at_index exceeds the tokens generated or token_ids is empty or
  // outside the vocabulary; a request that reaches max_tokens with the forced tokens finishes
  // with kLength. Unknown or finished handles are ignored.
  void Force(int64_t handle, int64_t at_index, std::vector<int32_t> token_ids);

  // Stops admitting (Submit answers UNAVAILABLE "draining"); in-flight requests run on.
  void BeginDrain();
  // Waits until draining and every accepted request has finished; false on timeout.
  bool WaitUntilDrained(absl::Duration timeout);
  // Ends every request left with UNAVAILABLE and joins the engine thread. Idempotent.
  void Stop();

  EngineLoad Load() const;
  // The latest summary of the computed cached blocks, at most prefix_summary_interval (plus one
  // step) behind the cache; its bits are empty while nothing is cached. Null when
  // prefix_summary_bytes is 0 or prefix caching is off.
  std::shared_ptr<const PrefixSummary> PrefixCacheSummary() const;
  int64_t vocab_size() const { return vocab_size_; }

 private:
  struct AddCommand {
    int64_t sequence_id = 0;
    EngineRequest request;
    std::shared_ptr<GenerationSink> sink;
    absl::Time receipt_time;
  };
  struct CancelCommand {
    int64_t handle = 0;
  };
  struct ForceCommand {
    int64_t handle = 0;
    int64_t at_index = 0;
    std::vector<int32_t> token_ids;
  };
  using Command = std::variant<AddCommand, CancelCommand, ForceCommand>;

  // Requests not admitted yet, and their size: prompt tokens (failover tokens included), and
  // work tokens = prompt tokens + max_tokens left, what max_waiting_tokens bounds.
  struct QueuedWork {
    int64_t requests = 0;
    int64_t prompt_tokens = 0;
    int64_t work_tokens = 0;
    void Add(const EngineRequest& request);
    QueuedWork& operator+=(const QueuedWork& other);
    QueuedWork& operator-=(const QueuedWork& other);
  };

  // A request the scheduler holds: what sampling and the sink need.
  struct ActiveRequest {
    int64_t handle = 0;  // what Submit returned: the first sequence id
    int32_t priority = 0;
    absl::Time deadline;
    SamplingParams sampling;
    std::vector<int32_t> prompt_token_ids;
    std::vector<int32_t> generated_token_ids;  // failover prefix, then sampled tokens
    std::shared_ptr<GenerationSink> sink;
    absl::Time receipt_time;
    bool scheduled = false;  // has been in a step
    GenerationSummary summary;
  };

  EngineLoop(std::unique_ptr<Backend> backend, const EngineLoopOptions& options,
             std::unique_ptr<Scheduler> scheduler);

  absl::Status Validate(const EngineRequest& request) const;
  SequenceRequest SequenceRequestFor(int64_t sequence_id, const ActiveRequest& request) const;
  void Run();
  // Takes the queued commands, waiting up to `wait` for one; false once Stop was called (the
  // commands left are still taken, to be refused).
  bool TakeCommands(std::vector<Command>& commands, absl::Duration wait);
  void Apply(AddCommand& command);
  void Apply(const CancelCommand& command);
  void Apply(ForceCommand& command);
  // The request's current sequence id (a forced request gets a new one), or 0 when it ended.
  int64_t SequenceIdOf(int64_t handle) const;
  // One Schedule → Forward → sample → ApplyStepResult iteration; false when the plan was empty.
  bool Step();
  // Ends a request the scheduler no longer holds and drops its state.
  void Finish(int64_t sequence_id, const absl::Status& status, RetireReason reason);
  void FailAll(const absl::Status& status);
  bool HasWork() const { return !active_.empty(); }
  // Moves applied adds from the queued counts into the scheduler's, refreshes load_ and wakes
  // drain waiters; takes mutex_. Called after commands are applied, after Schedule, and after
  // each step, so the counts are exact whenever a sink runs.
  void Publish(const QueuedWork& applied_adds);
  // Rebuilds and publishes the prefix-cache summary if the cache changed since the last one and
  // the interval has passed. Returns how long until a pending rebuild is due (so an idle loop
  // wakes for it), or InfiniteDuration when the summary is current or off.
  absl::Duration RefreshPrefixSummary(absl::Time now);

  const EngineLoopOptions options_;
  const int64_t vocab_size_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Scheduler> scheduler_;  // engine thread only

  // Engine thread only.
  absl::flat_hash_map<int64_t, ActiveRequest> active_;  // by sequence id
  // Handle → sequence id, for the requests whose ids differ (re-added by Force); sequence ids
  // are never reused, as the Scheduler requires.
  absl::flat_hash_map<int64_t, int64_t> renamed_;
  std::vector<SamplingRow> sampling_rows_;  // this step's, in plan order
  StepResult step_result_;
  std::vector<RetiredSequence> finished_;
  int64_t steps_ = 0;
  double last_step_seconds_ = 0.0;
  // The PrefixCache::computed_version the published summary was built from, and when.
  uint64_t summarized_cache_version_ = 0;
  absl::Time last_summary_time_ = absl::InfinitePast();

  mutable std::mutex mutex_;
  std::condition_variable wake_engine_;    // commands queued, or stop
  std::condition_variable wake_drainers_;  // load_ refreshed
  std::vector<Command> commands_;          // guarded by mutex_
  // Guarded by mutex_. Submit bounds the queue with these, so a full queue is refused at once
  // rather than one step later: never-admitted requests are queued_adds_ (not yet taken by the
  // loop, or taken but not yet published) plus unadmitted_ (the scheduler's, as of the last
  // Publish).
  QueuedWork queued_adds_;
  QueuedWork unadmitted_;
  int64_t rejected_queue_full_ = 0;  // refused by Submit
  bool draining_ = false;
  bool stopping_ = false;
  bool stopped_ = false;  // the engine thread has ended every request and exited
  EngineLoad load_;
  std::shared_ptr<const PrefixSummary> prefix_summary_;  // guarded by mutex_; null when off
  std::atomic<int64_t> next_sequence_id_{1};
  std::thread thread_;
};

}  // namespace reflect
