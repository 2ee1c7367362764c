#include "router/in_flight_request.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "router/http_errors.h"

namespace reflect {
namespace {

GenerationPipelineOptions PipelineOptions(const RoutedRequest& request) {
  return GenerationPipelineOptions{.trace_mode = request.trace_mode,
                                   .stop_strings = request.sampling.stop,
                                   .thinking_budget_tokens = request.thinking_budget_tokens,
                                   .logprobs = request.sampling.logprobs > 0};
}

double SecondsBetween(absl::Time from, absl::Time to) { return absl::ToDoubleSeconds(to - from); }

}  // namespace

DeadlineTimer::~DeadlineTimer() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
    entries_.clear();
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

DeadlineTimer::Key DeadlineTimer::Schedule(absl::Time when, std::function<void()> callback) {
  Key key{.when = when, .id = 0};
  bool earliest = false;
  {
    const std::lock_guard lock(mutex_);
    key.id = ++next_id_;
    const auto inserted = entries_.emplace(std::make_pair(when, key.id), std::move(callback)).first;
    earliest = inserted == entries_.begin();
    if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  }
  if (earliest) changed_.notify_all();
  return key;
}

void DeadlineTimer::Cancel(const Key& key) {
  const std::lock_guard lock(mutex_);
  entries_.erase(std::make_pair(key.when, key.id));
}

void DeadlineTimer::Run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (entries_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const absl::Time when = entries_.begin()->first.first;
    if (absl::Now() < when) {
      // Woken early by an earlier entry, a Cancel or the destructor: look again.
      changed_.wait_until(lock, absl::ToChronoTime(when));
      continue;
    }
    std::function<void()> callback = std::move(entries_.begin()->second);
    entries_.erase(entries_.begin());
    lock.unlock();
    callback();
    callback = nullptr;  // whatever it holds goes before the lock is taken again
    lock.lock();
  }
}

std::optional<size_t> PickReplica(const RouterServices& services,
                                  const std::vector<int32_t>& prompt_token_ids,
                                  const std::vector<bool>& excluded) {
  const RotationSnapshot snapshot = services.pool.InRotation(excluded);
  const std::optional<ReplicaChoice> choice =
      ChooseReplica(snapshot.candidates, prompt_token_ids, services.choice_options);
  if (!choice.has_value()) return std::nullopt;
  return snapshot.replica_indexes[choice->index];
}

InFlightRequest::InFlightRequest(RouterServices& services, uint64_t request_number,
                                 RoutedRequest request, std::shared_ptr<ResponseSink> sink)
    : services_(services),
      request_number_(request_number),
      request_(std::move(request)),
      pipeline_(services.tokenizer, PipelineOptions(request_)),
      sink_(std::move(sink)),
      refused_by_(services.pool.size(), false) {}

void InFlightRequest::Start(size_t replica_index) {
  admitted_time_ = absl::Now();
  const absl::Duration max_queue_time = services_.admission.limits().max_queue_time;
  if (max_queue_time != absl::InfiniteDuration()) {
    // Weak: a pending deadline keeps nothing alive; End drops it.
    queue_deadline_ = services_.queue_timer.Schedule(
        admitted_time_ + max_queue_time,
        [weak = std::weak_ptr<InFlightRequest>(shared_from_this())] {
          if (const std::shared_ptr<InFlightRequest> request = weak.lock(); request != nullptr) {
            request->QueueTimeout();
          }
        });
  }
  OpenStream(replica_index);
}

void InFlightRequest::QueueTimeout() {
  std::shared_ptr<ReplicaStream> stream;
  {
    const std::lock_guard lock(mutex_);
    if (left_queue_ || cancel_requested_ || queue_timed_out_) return;
    queue_timed_out_ = true;
    stream = stream_;
  }
  // Null only between streams: OpenStream cancels the next one.
  if (stream != nullptr) stream->Cancel();
}

bool InFlightRequest::queue_timed_out() {
  const std::lock_guard lock(mutex_);
  return queue_timed_out_;
}

absl::Status InFlightRequest::QueueTimeoutError() const {
  const absl::Time now = absl::Now();
  const absl::Duration hint = services_.admission.RetryHint(now);
  absl::Status status = absl::ResourceExhaustedError(absl::StrFormat(
      "waited %.1fs in the queue without being scheduled (max_queue_time %s); retry in %s",
      absl::ToDoubleSeconds(now - admitted_time_),
      absl::FormatDuration(services_.admission.limits().max_queue_time),
      absl::FormatDuration(hint)));
  SetRetryAfter(std::chrono::milliseconds(absl::ToInt64Milliseconds(hint)), status);
  return status;
}

void InFlightRequest::OpenStream(size_t replica_index) {
  replica_index_ = replica_index;
  stream_start_time_ = absl::Now();
  services_.pool.AddOutstanding(replica_index);
  std::shared_ptr<ReplicaStream> stream =
      services_.pool.client(replica_index).OpenStream(shared_from_this());
  bool cancel = false;
  {
    const std::lock_guard lock(mutex_);
    stream_ = stream;
    cancel = cancel_requested_ || queue_timed_out_;
  }
  // A Cancel that came between streams reaches the new one here (the stream holds it until Start).
  if (cancel) stream->Cancel();
  // Events may run on other threads from here on: nothing of this object is touched after it.
  stream->Start(request_);
}

void InFlightRequest::Cancel() {
  std::shared_ptr<ReplicaStream> stream;
  {
    const std::lock_guard lock(mutex_);
    if (cancel_requested_) return;
    cancel_requested_ = true;
    stream = stream_;
  }
  if (stream != nullptr) stream->Cancel();
}

void InFlightRequest::OnMessage(ReplicaMessage message) {
  if (ended_) return;  // a stop string ended it; the cancelled stream may still deliver
  const absl::Time now = absl::Now();
  if (!first_token_time_.has_value()) {
    // Before the first token the queue-time deadline may have passed: then the stream is being
    // cancelled, and nothing of it reaches the client.
    const std::lock_guard lock(mutex_);
    if (queue_timed_out_) return;
    if (!message.tokens.empty()) left_queue_ = true;
  }
  if (!message.tokens.empty()) {
    if (!first_token_time_.has_value()) {
      if (queue_deadline_.has_value()) services_.queue_timer.Cancel(*queue_deadline_);
      first_token_time_ = now;
      services_.admission.FirstToken(static_cast<int64_t>(request_.prompt_token_ids.size()),
                                     request_.sampling.max_tokens, now);
    } else if (services_.metrics != nullptr) {
      // Tokens that arrive together share the gap since the last message.
      const double gap =
          SecondsBetween(last_token_time_, now) / static_cast<double>(message.tokens.size());
      for (size_t token = 0; token < message.tokens.size(); ++token) {
        services_.metrics->ObserveInterTokenLatency(gap);
      }
    }
    last_token_time_ = now;
    last_token_id_ = message.tokens.back().token_id;
  }
  if (message.finish.has_value()) finish_ = message.finish;

  std::vector<OutputPiece> pieces = pipeline_.PushTokens(message.tokens);
  if (!first_output_time_.has_value() && pipeline_.output_started()) first_output_time_ = now;
  if (!pieces.empty()) sink_->OnPieces(std::move(pieces));

  if (pipeline_.stopped_by_string()) {
    End(Outcome(GenerationStopReason::kStopString));
    std::shared_ptr<ReplicaStream> stream;
    {
      const std::lock_guard lock(mutex_);
      stream = stream_;
    }
    // Frees the replica's sequence now rather than at max_tokens.
    stream->Cancel();
    return;
  }
  if (std::optional<ForcedTokens> forced = pipeline_.TakeForcedTokens(); forced.has_value()) {
    std::shared_ptr<ReplicaStream> stream;
    {
      const std::lock_guard lock(mutex_);
      stream = stream_;
    }
    stream->ForceTokens(*forced);
  }
}

void InFlightRequest::OnClosed(const absl::Status& status) {
  services_.pool.RemoveOutstanding(replica_index_);
  if (!ended_) {
    if (status.ok() && finish_.has_value()) {
      std::vector<OutputPiece> pieces = pipeline_.Finish();
      if (!first_output_time_.has_value() && pipeline_.output_started()) {
        first_output_time_ = absl::Now();
      }
      if (!pieces.empty()) sink_->OnPieces(std::move(pieces));
      End(Outcome(finish_->reason));
    } else if (status.ok() && !queue_timed_out()) {
      End(absl::InternalError(absl::StrCat("replica ", services_.pool.Describe(replica_index_),
                                           " ended the stream without a finish")));
    } else {
      HandleFailure(status);
    }
  }
  if (!ended_) return;  // retried on another replica, whose stream now owns this request
  {
    const std::lock_guard lock(mutex_);
    stream_.reset();
  }
  // Last: the router may be waiting for this to tear everything down.
  services_.request_done(request_number_);
}

void InFlightRequest::HandleFailure(const absl::Status& status) {
  bool client_cancelled = false;
  {
    const std::lock_guard lock(mutex_);
    client_cancelled = cancel_requested_;
  }
  const std::string replica = services_.pool.Describe(replica_index_);
  if (services_.shutting_down.load()) {
    End(absl::UnavailableError("the router is shutting down"));
    return;
  }
  if (client_cancelled) {
    End(absl::CancelledError("cancelled by the client"));
    return;
  }
  if (queue_timed_out()) {
    End(QueueTimeoutError());
    return;
  }
  if (absl::IsResourceExhausted(status) && !first_token_time_.has_value()) {
    // Nothing reached the client yet, so another replica can take the request unseen.
    refused_by_[replica_index_] = true;
    if (const std::optional<std::chrono::milliseconds> hint = RetryAfter(status);
        hint.has_value()) {
      const absl::Duration duration = absl::FromChrono(*hint);
      replica_retry_after_ =
          replica_retry_after_.has_value() ? std::min(*replica_retry_after_, duration) : duration;
    }
    if (const std::optional<size_t> next =
            PickReplica(services_, request_.prompt_token_ids, refused_by_);
        next.has_value()) {
      OpenStream(*next);
      return;
    }
    absl::Status exhausted = absl::ResourceExhaustedError(
        absl::StrCat("every replica is at capacity (last: ", replica, ": ", status.message(), ")"));
    const absl::Duration hint =
        replica_retry_after_.value_or(services_.admission.RetryHint(absl::Now()));
    SetRetryAfter(std::chrono::milliseconds(absl::ToInt64Milliseconds(hint)), exhausted);
    End(exhausted);
    return;
  }
  if (absl::IsUnavailable(status) || absl::IsCancelled(status)) {
    // Not cancelled by us: the connection broke or the replica went away (killed, draining).
    services_.pool.TakeOutOfRotation(
        replica_index_, absl::UnavailableError(absl::StrCat("stream broke: ", status.message())));
    End(absl::UnavailableError(
        absl::StrCat("replica ", replica, " became unavailable: ", status.message())));
    return;
  }
  End(absl::Status(status.code(), absl::StrCat("replica ", replica, ": ", status.message())));
}

GenerationOutcome InFlightRequest::Outcome(GenerationStopReason reason) const {
  const absl::Time now = absl::Now();
  const absl::Time received = request_.received_time;
  GenerationOutcome outcome;
  outcome.reason = reason;
  if (reason == GenerationStopReason::kStopString) outcome.matched_stop = pipeline_.matched_stop();
  if (reason == GenerationStopReason::kStopToken) outcome.matched_stop_token_id = last_token_id_;
  outcome.seed = request_.sampling.seed;
  outcome.thinking_budget_exhausted = pipeline_.thinking_budget_exhausted();
  outcome.usage.prompt_tokens = static_cast<int64_t>(request_.prompt_token_ids.size());
  outcome.usage.completion_tokens = pipeline_.completion_tokens();
  outcome.usage.sections = pipeline_.section_counts();
  // The router's wait (admission to the last stream's start) plus the replica's queue. A stop
  // string cancels the stream before the replica's finish, whose figures are then unknown.
  outcome.timings.queue_seconds = SecondsBetween(received, stream_start_time_);
  if (finish_.has_value()) {
    outcome.usage.cached_prompt_tokens = finish_->cached_prompt_tokens;
    outcome.timings.queue_seconds += finish_->queue_seconds;
  }
  if (first_token_time_.has_value()) {
    outcome.timings.time_to_first_token_seconds = SecondsBetween(received, *first_token_time_);
  }
  if (first_output_time_.has_value()) {
    outcome.timings.time_to_first_output_token_seconds =
        SecondsBetween(received, *first_output_time_);
  }
  outcome.timings.e2e_seconds = SecondsBetween(received, now);
  outcome.replica_id = services_.pool.ReplicaId(replica_index_);
  return outcome;
}

void InFlightRequest::End(const absl::StatusOr<GenerationOutcome>& outcome) {
  if (ended_) return;
  ended_ = true;
  {
    const std::lock_guard lock(mutex_);
    left_queue_ = true;
  }
  if (queue_deadline_.has_value()) services_.queue_timer.Cancel(*queue_deadline_);
  const absl::Time now = absl::Now();
  if (first_token_time_.has_value()) {
    services_.admission.EndRunning(now);
  } else {
    services_.admission.EndQueued(static_cast<int64_t>(request_.prompt_token_ids.size()),
                                  request_.sampling.max_tokens, now);
  }
  if (services_.metrics != nullptr) services_.metrics->RequestFinished(outcome);
  if (!outcome.ok()) {
    std::fprintf(stderr, "reflect-router: request_id=%s event=failed status=%s\n",
                 request_.request_id.c_str(), outcome.status().ToString().c_str());
  }
  const std::shared_ptr<ResponseSink> sink = std::move(sink_);
  sink->OnFinished(outcome);
}

}  // namespace reflect
