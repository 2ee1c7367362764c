#include "router/admission.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "router/http_errors.h"

namespace reflect {

void AdmissionController::DepartureRate::Record(absl::Time now) {
  times_[static_cast<size_t>(recorded_ % kRateWindowEvents)] = now;
  ++recorded_;
}

double AdmissionController::DepartureRate::PerSecond(absl::Time now) const {
  // Walk back from the newest departure while inside the window; the rate is the departures
  // after the oldest one kept, over the time from it to now (not to the newest departure: a queue
  // that stopped draining a while ago must look slow).
  const int64_t kept = std::min<int64_t>(recorded_, kRateWindowEvents);
  int64_t counted = 0;
  absl::Time oldest = now;
  for (int64_t back = 1; back <= kept; ++back) {
    const absl::Time time = times_[static_cast<size_t>((recorded_ - back) % kRateWindowEvents)];
    if (now - time > kRateWindow) break;
    oldest = time;
    ++counted;
  }
  if (counted < 2) return 0.0;
  const double seconds = absl::ToDoubleSeconds(now - oldest);
  if (seconds <= 0.0) return 0.0;
  return static_cast<double>(counted - 1) / seconds;
}

AdmissionController::AdmissionController(AdmissionLimits limits) : limits_(limits) {}

absl::Duration AdmissionController::HintLocked(int64_t backlog, const DepartureRate& rate,
                                               absl::Time now) const {
  const double per_second = rate.PerSecond(now);
  absl::Duration hint = limits_.max_retry_after;
  if (per_second > 0.0) {
    hint = absl::Seconds(static_cast<double>(std::max<int64_t>(backlog, 1)) / per_second);
  }
  return std::clamp(hint, limits_.min_retry_after, limits_.max_retry_after);
}

absl::Status AdmissionController::RefuseLocked(const char* what, int64_t backlog,
                                               const DepartureRate& rate, absl::Time now) const {
  const absl::Duration hint = HintLocked(backlog, rate, now);
  absl::Status status = absl::ResourceExhaustedError(
      absl::StrCat("the router is overloaded (", what, "); retry in ", absl::FormatDuration(hint)));
  SetRetryAfter(std::chrono::milliseconds(absl::ToInt64Milliseconds(hint)), status);
  return status;
}

absl::Status AdmissionController::TryAdmit(int64_t prompt_tokens, int64_t max_output_tokens,
                                           absl::Time now) {
  prompt_tokens = std::max<int64_t>(prompt_tokens, 0);
  const int64_t tokens = prompt_tokens + std::max<int64_t>(max_output_tokens, 0);
  const std::lock_guard lock(mutex_);
  const int64_t in_flight = queued_requests_ + running_requests_;
  if (in_flight >= limits_.max_in_flight_requests) {
    return RefuseLocked("requests in flight at their limit", in_flight, ends_, now);
  }
  if (queued_requests_ >= limits_.max_queued_requests) {
    return RefuseLocked("queue full", queued_requests_, first_tokens_, now);
  }
  if (queued_requests_ > 0 && queued_tokens_ + tokens > limits_.max_queued_tokens) {
    return RefuseLocked("queued tokens (prompt + max_tokens) at their limit", queued_requests_,
                        first_tokens_, now);
  }
  ++queued_requests_;
  queued_prompt_tokens_ += prompt_tokens;
  queued_tokens_ += tokens;
  return absl::OkStatus();
}

void AdmissionController::LeaveQueueLocked(int64_t prompt_tokens, int64_t max_output_tokens) {
  prompt_tokens = std::max<int64_t>(prompt_tokens, 0);
  --queued_requests_;
  queued_prompt_tokens_ -= prompt_tokens;
  queued_tokens_ -= prompt_tokens + std::max<int64_t>(max_output_tokens, 0);
}

void AdmissionController::FirstToken(int64_t prompt_tokens, int64_t max_output_tokens,
                                     absl::Time now) {
  const std::lock_guard lock(mutex_);
  LeaveQueueLocked(prompt_tokens, max_output_tokens);
  ++running_requests_;
  first_tokens_.Record(now);
}

void AdmissionController::EndQueued(int64_t prompt_tokens, int64_t max_output_tokens,
                                    absl::Time now) {
  const std::lock_guard lock(mutex_);
  LeaveQueueLocked(prompt_tokens, max_output_tokens);
  // Leaving the queue without a token frees a place all the same: it counts as an end (the
  // in-flight hint) but not as a first token (the queue's drain rate), since a burst of cancels
  // says nothing about how fast replicas take work.
  ends_.Record(now);
}

void AdmissionController::EndRunning(absl::Time now) {
  const std::lock_guard lock(mutex_);
  --running_requests_;
  ends_.Record(now);
}

absl::Duration AdmissionController::RetryHint(absl::Time now) const {
  const std::lock_guard lock(mutex_);
  return HintLocked(queued_requests_, first_tokens_, now);
}

int64_t AdmissionController::QueuedTokens() const {
  const std::lock_guard lock(mutex_);
  return queued_tokens_;
}

RouterLoad AdmissionController::Load() const {
  const std::lock_guard lock(mutex_);
  return RouterLoad{.queued_requests = queued_requests_,
                    .queued_prompt_tokens = queued_prompt_tokens_,
                    .running_requests = running_requests_};
}

}  // namespace reflect
