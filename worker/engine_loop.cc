#include "worker/engine_loop.h"

#include <algorithm>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

// How long a loop with requests but nothing schedulable (all waiting on a shared prefix block or
// on swap space) sleeps before planning again, so it does not spin.
constexpr absl::Duration kStalledWait = absl::Milliseconds(2);

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

bool SummarizesPrefixCache(const EngineLoopOptions& options) {
  return options.enable_prefix_caching && options.prefix_summary_bytes > 0;
}

// The Bloom filter of every computed cached block. An empty cache gives empty bits (what the
// proto means by "nothing cached"), so an idle replica does not ship a filter of zeros.
PrefixSummary SummarizePrefixCache(const BlockManager& blocks, const EngineLoopOptions& options) {
  const PrefixCache& cache = blocks.prefix_cache();
  if (cache.num_computed() == 0) {
    return PrefixSummary{.block_size_tokens = blocks.block_size(),
                         .probe_count = options.prefix_summary_probes,
                         .bits = {},
                         .inserted_blocks = 0};
  }
  PrefixSummary summary = MakePrefixSummary(blocks.block_size(), options.prefix_summary_bytes,
                                            options.prefix_summary_probes);
  cache.ForEachComputedHash([&summary](uint64_t hash) { InsertBlockHash(hash, summary); });
  return summary;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EngineLoop>> EngineLoop::Create(std::unique_ptr<Backend> backend,
                                                               const EngineLoopOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("EngineLoop: no backend");
  if (options.prefix_summary_bytes < 0 ||
      (options.prefix_summary_bytes > 0 && options.prefix_summary_probes <= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineLoop: prefix summary of ", options.prefix_summary_bytes, " bytes with ",
                     options.prefix_summary_probes, " probes; want bytes >= 0 and probes > 0"));
  }
  const BlockManagerConfig kv_config{
      .block_size = static_cast<int32_t>(backend->block_size()),
      .num_device_blocks = static_cast<int32_t>(backend->num_kv_blocks()),
      .num_host_blocks = options.num_host_blocks,
      .enable_prefix_caching = options.enable_prefix_caching};
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler,
                           Scheduler::Create(options.scheduler, kv_config));
  std::unique_ptr<EngineLoop> loop(
      new EngineLoop(std::move(backend), options, std::move(scheduler)));
  loop->Publish(QueuedWork{});
  if (SummarizesPrefixCache(options)) {
    // Published before the thread starts, so GetLoad reports the summary's shape from the start.
    loop->prefix_summary_ = std::make_shared<const PrefixSummary>(
        SummarizePrefixCache(loop->scheduler_->block_manager(), options));
    loop->summarized_cache_version_ =
        loop->scheduler_->block_manager().prefix_cache().computed_version();
  }
  loop->thread_ = std::thread([raw = loop.get()] { raw->Run(); });
  return loop;
}

EngineLoop::EngineLoop(std::unique_ptr<Backend> backend, const EngineLoopOptions& options,
                       std::unique_ptr<Scheduler> scheduler)
    : options_(options),
      vocab_size_(backend->vocab_size()),
      backend_(std::move(backend)),
      scheduler_(std::move(scheduler)) {}

EngineLoop::~EngineLoop() { Stop(); }

absl::Status EngineLoop::Validate(const EngineRequest& request) const {
  if (request.prompt_token_ids.empty()) {
    return absl::InvalidArgumentError("the prompt has no tokens");
  }
  for (const std::vector<int32_t>* ids :
       {&request.prompt_token_ids, &request.generated_token_ids}) {
    for (const int32_t id : *ids) {
      if (id < 0 || id >= vocab_size_) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size_, ")"));
      }
    }
  }
  const int64_t num_generated = std::ssize(request.generated_token_ids);
  if (request.sampling.max_tokens <= num_generated) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", request.sampling.max_tokens,
                                                   " leaves nothing to generate after ",
                                                   num_generated, " generated tokens"));
  }
  const int64_t num_tokens = std::ssize(request.prompt_token_ids) + num_generated;
  if (num_tokens + 1 > options_.scheduler.max_model_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", num_tokens, " tokens; the model's context holds ",
                     options_.scheduler.max_model_length, " including one generated token"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> EngineLoop::Submit(EngineRequest request,
                                           std::shared_ptr<GenerationSink> sink) {
  REFLECT_RETURN_IF_ERROR(Validate(request));
  QueuedWork work;
  work.Add(request);
  const absl::Time receipt_time = absl::Now();
  const std::lock_guard lock(mutex_);
  if (stopping_) return absl::UnavailableError("the replica is shutting down");
  if (draining_) return absl::UnavailableError("the replica is draining: try another replica");
  const int64_t waiting_requests = queued_adds_.requests + unadmitted_.requests;
  const int64_t waiting_work = queued_adds_.work_tokens + unadmitted_.work_tokens;
  if (waiting_requests >= options_.scheduler.max_waiting_requests ||
      waiting_work + work.work_tokens > options_.scheduler.max_waiting_tokens) {
    ++rejected_queue_full_;
    return absl::ResourceExhaustedError(absl::StrCat("the replica's waiting queue is full (",
                                                     waiting_requests, " requests, ", waiting_work,
                                                     " prompt + max_tokens tokens)"));
  }
  const int64_t sequence_id = next_sequence_id_.fetch_add(1);
  commands_.push_back(AddCommand{.sequence_id = sequence_id,
                                 .request = std::move(request),
                                 .sink = std::move(sink),
                                 .receipt_time = receipt_time});
  queued_adds_ += work;
  wake_engine_.notify_one();
  return sequence_id;
}

void EngineLoop::Cancel(int64_t handle) {
  const std::lock_guard lock(mutex_);
  commands_.push_back(CancelCommand{.handle = handle});
  wake_engine_.notify_one();
}

void EngineLoop::Force(int64_t handle, int64_t at_index, std::vector<int32_t> token_ids) {
  const std::lock_guard lock(mutex_);
  commands_.push_back(
      ForceCommand{.handle = handle, .at_index = at_index, .token_ids = std::move(token_ids)});
  wake_engine_.notify_one();
}

void EngineLoop::BeginDrain() {
  const std::lock_guard lock(mutex_);
  draining_ = true;
  wake_engine_.notify_one();
}

bool EngineLoop::WaitUntilDrained(absl::Duration timeout) {
  const auto drained = [this] {
    return stopped_ || (draining_ && queued_adds_.requests == 0 && load_.running_requests == 0 &&
                        load_.waiting_requests == 0);
  };
  std::unique_lock lock(mutex_);
  if (timeout == absl::InfiniteDuration()) {
    // wait_for(nanoseconds::max()) would overflow the clock and return at once.
    wake_drainers_.wait(lock, drained);
    return true;
  }
  return wake_drainers_.wait_for(lock, absl::ToChronoNanoseconds(timeout), drained);
}

void EngineLoop::Stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_engine_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

EngineLoad EngineLoop::Load() const {
  const std::lock_guard lock(mutex_);
  EngineLoad load = load_;
  load.accepting = !draining_ && !stopping_;
  load.requests_rejected_queue_full += rejected_queue_full_;
  return load;
}

std::shared_ptr<const PrefixSummary> EngineLoop::PrefixCacheSummary() const {
  const std::lock_guard lock(mutex_);
  return prefix_summary_;
}

absl::Duration EngineLoop::RefreshPrefixSummary(absl::Time now) {
  if (!SummarizesPrefixCache(options_)) return absl::InfiniteDuration();
  const BlockManager& blocks = scheduler_->block_manager();
  const uint64_t version = blocks.prefix_cache().computed_version();
  if (version == summarized_cache_version_) return absl::InfiniteDuration();
  const absl::Time due = last_summary_time_ + options_.prefix_summary_interval;
  if (now < due) return due - now;
  std::shared_ptr<const PrefixSummary> summary =
      std::make_shared<const PrefixSummary>(SummarizePrefixCache(blocks, options_));
  summarized_cache_version_ = version;
  last_summary_time_ = now;
  {
    const std::lock_guard lock(mutex_);
    prefix_summary_.swap(summary);
  }
  // `summary` now holds the previous filter: freed here, outside the lock, unless a reader
  // still holds it.
  return absl::InfiniteDuration();
}

bool EngineLoop::TakeCommands(std::vector<Command>& commands, absl::Duration wait) {
  std::unique_lock lock(mutex_);
  if (wait > absl::ZeroDuration()) {
    wake_engine_.wait_for(lock, absl::ToChronoNanoseconds(wait),
                          [this] { return !commands_.empty() || stopping_; });
  }
  commands.swap(commands_);
  return !stopping_;
}

void EngineLoop::Run() {
  std::vector<Command> commands;
  absl::Duration wait = absl::ZeroDuration();
  while (TakeCommands(commands, wait)) {
    QueuedWork applied_adds;
    for (Command& command : commands) {
      if (AddCommand* add = std::get_if<AddCommand>(&command)) {
        applied_adds.Add(add->request);
        Apply(*add);
      } else if (ForceCommand* force = std::get_if<ForceCommand>(&command)) {
        Apply(*force);
      } else {
        Apply(std::get<CancelCommand>(command));
      }
    }
    commands.clear();
    // The queue bound Submit checks must see the adds move into the scheduler now, not after
    // the step (whose sinks may already make callers submit more).
    Publish(applied_adds);
    bool ran = false;
    if (HasWork()) {
      ran = Step();
      Publish(QueuedWork{});
    }
    // Between steps, never inside one: the rebuild delays at most the next step, once per interval.
    const absl::Duration summary_due = RefreshPrefixSummary(absl::Now());
    if (!HasWork()) {
      wait = std::min(options_.heartbeat_interval, summary_due);
    } else {
      wait = ran ? absl::ZeroDuration() : std::min(kStalledWait, summary_due);
    }
  }
  // Stopping: refuse what was still queued, end what runs.
  const absl::Status stopped = absl::UnavailableError("the replica stopped");
  QueuedWork refused_adds;
  for (Command& command : commands) {
    if (AddCommand* add = std::get_if<AddCommand>(&command)) {
      refused_adds.Add(add->request);
      add->sink->OnFinished(stopped, GenerationSummary{});
    }
  }
  FailAll(stopped);
  Publish(refused_adds);
  const std::lock_guard lock(mutex_);
  stopped_ = true;
  wake_drainers_.notify_all();
}

SequenceRequest EngineLoop::SequenceRequestFor(int64_t sequence_id,
                                               const ActiveRequest& request) const {
  SequenceRequest sequence{
      .id = sequence_id,
      .prompt_token_ids = request.prompt_token_ids,
      .max_tokens = request.sampling.max_tokens - std::ssize(request.generated_token_ids),
      .stop_token_ids = request.sampling.stop_token_ids,
      .priority = request.priority,
      .arrival_time = request.receipt_time,
      .deadline = request.deadline};
  sequence.prompt_token_ids.insert(sequence.prompt_token_ids.end(),
                                   request.generated_token_ids.begin(),
                                   request.generated_token_ids.end());
  if (!request.sampling.ignore_eos) {
    sequence.stop_token_ids.insert(sequence.stop_token_ids.end(), options_.eos_token_ids.begin(),
                                   options_.eos_token_ids.end());
  }
  return sequence;
}

void EngineLoop::Apply(AddCommand& command) {
  EngineRequest& request = command.request;
  ActiveRequest active{.handle = command.sequence_id,
                       .priority = request.priority,
                       .deadline = request.deadline,
                       .sampling = std::move(request.sampling),
                       .prompt_token_ids = std::move(request.prompt_token_ids),
                       .generated_token_ids = std::move(request.generated_token_ids),
                       .sink = std::move(command.sink),
                       .receipt_time = command.receipt_time,
                       .scheduled = false,
                       .summary = GenerationSummary{}};
  if (absl::Status status = scheduler_->AddRequest(SequenceRequestFor(command.sequence_id, active));
      !status.ok()) {
    active.sink->OnFinished(status, GenerationSummary{});
    return;
  }
  active_.emplace(command.sequence_id, std::move(active));
}

int64_t EngineLoop::SequenceIdOf(int64_t handle) const {
  const auto renamed = renamed_.find(handle);
  const int64_t sequence_id = renamed != renamed_.end() ? renamed->second : handle;
  return active_.contains(sequence_id) ? sequence_id : 0;
}

void EngineLoop::Apply(const CancelCommand& command) {
  const int64_t sequence_id = SequenceIdOf(command.handle);
  if (sequence_id == 0) return;
  // The scheduler holds every active request, so this cannot fail.
  scheduler_->Cancel(sequence_id).IgnoreError();
  Finish(sequence_id, absl::CancelledError("cancelled by the client"), RetireReason::kCancelled);
}

void EngineLoop::Apply(ForceCommand& command) {
  const int64_t old_id = SequenceIdOf(command.handle);
  if (old_id == 0) return;
  scheduler_->Cancel(old_id).IgnoreError();
  const int64_t num_generated = std::ssize(active_.at(old_id).generated_token_ids);
  absl::Status invalid;
  if (command.at_index < 0 || command.at_index > num_generated) {
    invalid = absl::InvalidArgumentError(absl::StrCat("force at index ", command.at_index, " but ",
                                                      num_generated, " tokens were generated"));
  } else if (command.token_ids.empty()) {
    invalid = absl::InvalidArgumentError("force without tokens");
  }
  for (const int32_t id : command.token_ids) {
    if (invalid.ok() && (id < 0 || id >= vocab_size_)) {
      invalid = absl::InvalidArgumentError(absl::StrCat(
          "forced token id ", id, " is outside the vocabulary [0, ", vocab_size_, ")"));
    }
  }
  if (!invalid.ok()) {
    Finish(old_id, invalid, RetireReason::kNone);
    return;
  }
  // Sequence ids are never reused: the request continues under a fresh one.
  const int64_t new_id = next_sequence_id_.fetch_add(1);
  auto node = active_.extract(old_id);
  node.key() = new_id;
  ActiveRequest& request = active_.insert(std::move(node)).position->second;
  renamed_[request.handle] = new_id;
  request.generated_token_ids.resize(command.at_index);
  for (const int32_t id : command.token_ids) {
    request.generated_token_ids.push_back(id);
    // Forced, not sampled: logprob 0 and no alternatives (the sink's convention).
    request.sink->OnToken(GeneratedToken{
        .index = std::ssize(request.generated_token_ids) - 1, .token_id = id, .logprob = 0.0f});
  }
  SequenceRequest sequence = SequenceRequestFor(new_id, request);
  const int32_t last = request.generated_token_ids.back();
  if (Contains(sequence.stop_token_ids, last)) {
    Finish(new_id, absl::OkStatus(), RetireReason::kStopToken);
  } else if (sequence.max_tokens <= 0) {
    Finish(new_id, absl::OkStatus(), RetireReason::kMaxTokens);
  } else if (std::ssize(sequence.prompt_token_ids) >= options_.scheduler.max_model_length) {
    Finish(new_id, absl::OkStatus(), RetireReason::kMaxModelLength);
  } else if (absl::Status status = scheduler_->AddRequest(std::move(sequence)); !status.ok()) {
    Finish(new_id, status, RetireReason::kNone);
  }
}

bool EngineLoop::Step() {
  const absl::Time start = absl::Now();
  const SchedulerOutput& output = scheduler_->Schedule(start);
  for (const RetiredSequence& retired : output.retired) {
    Finish(retired.sequence_id, retired.status, retired.reason);
  }
  Publish(QueuedWork{});  // admitted requests leave the waiting counts before this step's sinks run
  for (const Preemption& preemption : output.preempted) {
    if (auto found = active_.find(preemption.sequence_id); found != active_.end()) {
      ++found->second.summary.preemptions;
    }
  }
  const StepPlan& plan = output.plan;
  sampling_rows_.clear();
  for (const ScheduledSequence& entry : plan.sequences) {
    ActiveRequest& request = active_.at(entry.sequence_id);
    if (!request.scheduled) {
      request.scheduled = true;
      request.summary.queue_seconds = absl::ToDoubleSeconds(start - request.receipt_time);
      request.summary.cached_prompt_tokens =
          std::min(entry.start_position, std::ssize(request.prompt_token_ids));
    }
    if (!entry.needs_logits) continue;
    sampling_rows_.push_back(SamplingRow{.sequence_id = entry.sequence_id,
                                         .params = &request.sampling,
                                         .prompt_ids = request.prompt_token_ids,
                                         .generated_ids = request.generated_token_ids,
                                         .position = std::ssize(request.prompt_token_ids) +
                                                     std::ssize(request.generated_token_ids)});
  }
  const bool ran = !plan.sequences.empty() || !plan.swap_out.empty() || !plan.swap_in.empty();

  step_result_.tokens.clear();
  absl::Status status;
  if (ran) status = backend_->ForwardAndSample(plan, sampling_rows_, step_result_.tokens);
  if (!status.ok()) {
    step_result_.tokens.clear();
    const absl::Status failed =
        absl::InternalError(absl::StrCat("step failed: ", status.message()));
    for (const ScheduledSequence& entry : plan.sequences) {
      if (!active_.contains(entry.sequence_id)) continue;
      scheduler_->Cancel(entry.sequence_id).IgnoreError();
      Finish(entry.sequence_id, failed, RetireReason::kNone);
    }
  }

  finished_.clear();
  if (absl::Status applied = scheduler_->ApplyStepResult(step_result_, finished_); !applied.ok()) {
    // The result was built from the plan itself, so this is a bug; fail loudly rather than
    // leave sequences waiting for tokens that will never come.
    FailAll(absl::InternalError(absl::StrCat("engine step result refused: ", applied.message())));
    return ran;
  }
  for (SampledToken& token : step_result_.tokens) {
    auto found = active_.find(token.sequence_id);
    if (found == active_.end()) continue;
    ActiveRequest& request = found->second;
    request.generated_token_ids.push_back(token.token_id);
    request.sink->OnToken(GeneratedToken{.index = std::ssize(request.generated_token_ids) - 1,
                                         .token_id = token.token_id,
                                         .logprob = token.logprob,
                                         .top_logprobs = std::move(token.top_logprobs)});
  }
  for (const RetiredSequence& retired : finished_) {
    Finish(retired.sequence_id, retired.status, retired.reason);
  }
  if (ran) {
    ++steps_;
    last_step_seconds_ = absl::ToDoubleSeconds(absl::Now() - start);
    if (options_.on_step) {
      StepStats stats{.sequences = std::ssize(plan.sequences),
                      .duration_seconds = last_step_seconds_};
      for (const ScheduledSequence& entry : plan.sequences) {
        stats.tokens += std::ssize(entry.token_ids);
      }
      options_.on_step(stats);
    }
  }
  return ran;
}

void EngineLoop::Finish(int64_t sequence_id, const absl::Status& status, RetireReason reason) {
  auto found = active_.find(sequence_id);
  if (found == active_.end()) return;
  ActiveRequest request = std::move(found->second);
  active_.erase(found);
  renamed_.erase(request.handle);
  absl::Status outcome = status;
  switch (reason) {
    case RetireReason::kStopToken:
      request.summary.reason =
          !request.generated_token_ids.empty() &&
                  Contains(request.sampling.stop_token_ids, request.generated_token_ids.back())
              ? StopReason::kStopToken
              : StopReason::kEos;
      break;
    case RetireReason::kMaxTokens:
      request.summary.reason = StopReason::kLength;
      break;
    case RetireReason::kMaxModelLength:
      request.summary.reason = StopReason::kContextLength;
      break;
    case RetireReason::kCancelled:
      if (outcome.ok()) outcome = absl::CancelledError("cancelled");
      break;
    case RetireReason::kDeadlineExceeded:
      if (outcome.ok()) outcome = absl::DeadlineExceededError("the request's deadline passed");
      break;
    case RetireReason::kExceedsKvCapacity:
    case RetireReason::kNone:
      break;
  }
  request.sink->OnFinished(outcome, request.summary);
}

void EngineLoop::FailAll(const absl::Status& status) {
  std::vector<int64_t> ids;
  ids.reserve(active_.size());
  for (const auto& [sequence_id, request] : active_) ids.push_back(sequence_id);
  std::sort(ids.begin(), ids.end());
  for (const int64_t sequence_id : ids) {
    scheduler_->Cancel(sequence_id).IgnoreError();
    Finish(sequence_id, status, RetireReason::kNone);
  }
}

void EngineLoop::QueuedWork::Add(const EngineRequest& request) {
  ++requests;
  prompt_tokens += std::ssize(request.prompt_token_ids) + std::ssize(request.generated_token_ids);
  work_tokens += std::ssize(request.prompt_token_ids) + request.sampling.max_tokens;
}

EngineLoop::QueuedWork& EngineLoop::QueuedWork::operator+=(const QueuedWork& other) {
  requests += other.requests;
  prompt_tokens += other.prompt_tokens;
  work_tokens += other.work_tokens;
  return *this;
}

EngineLoop::QueuedWork& EngineLoop::QueuedWork::operator-=(const QueuedWork& other) {
  requests -= other.requests;
  prompt_tokens -= other.prompt_tokens;
  work_tokens -= other.work_tokens;
  return *this;
}

void EngineLoop::Publish(const QueuedWork& applied_adds) {
  const BlockManager& blocks = scheduler_->block_manager();
  const SchedulerCounters& counters = scheduler_->counters();
  const std::lock_guard lock(mutex_);
  queued_adds_ -= applied_adds;
  unadmitted_.requests = scheduler_->num_waiting_requests();
  unadmitted_.prompt_tokens = scheduler_->num_waiting_tokens();
  unadmitted_.work_tokens = scheduler_->num_waiting_work_tokens();
  load_.running_requests = scheduler_->num_running();
  load_.waiting_requests = scheduler_->num_queued() + queued_adds_.requests;
  load_.waiting_prompt_tokens = scheduler_->num_waiting_tokens() + queued_adds_.prompt_tokens;
  load_.kv_blocks_total = blocks.num_device_blocks();
  load_.kv_blocks_used = blocks.num_used_blocks();
  load_.kv_blocks_cached = blocks.num_cached_blocks();
  load_.kv_blocks_free = blocks.num_free_blocks();
  load_.prefix_cache_queried_tokens = blocks.counters().prefix_cache_queried_tokens;
  load_.prefix_cache_hit_tokens = blocks.counters().prefix_cache_hit_tokens;
  load_.preemptions_by_recompute = counters.preemptions_by_recompute;
  load_.preemptions_by_swap = counters.preemptions_by_swap;
  load_.requests_rejected_queue_full = counters.requests_rejected_queue_full;
  load_.steps = steps_;
  load_.last_step_seconds = last_step_seconds_;
  load_.last_progress = absl::Now();
  wake_drainers_.notify_all();
}

}  // namespace reflect
