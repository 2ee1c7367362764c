// Admission control of the router (DESIGN §4, §8): a bounded queue, by requests and by tokens
// (prompt + max_tokens, the most work each may bring), of requests admitted but without a first
// token yet, plus a cap on requests in flight.
// Beyond a bound a request is refused at once with RESOURCE_EXHAUSTED and a retry hint, so a
// traffic spike turns into fast 429s instead of a growing backlog of minute-long waits.
//
// Request lifecycle as counted here:
//
//   TryAdmit ──▶ queued ──FirstToken──▶ running ──EndRunning──▶ (gone)
//                  │
//                  └──EndQueued──▶ (gone)          (ended before its first token)
//
// The retry hint estimates how long the backlog ahead of a new request takes to clear: the
// requests queued (or in flight, for the in-flight cap) divided by the rate at which they recently
// left that state (first tokens, or ends), clamped to [min_retry_after, max_retry_after]. With no
// recent departures the backlog is not moving, so the hint is the maximum.
//
// Thread-safety: every method may be called from any thread (one mutex, held for O(1) work).
// Cost: O(1) per call; memory O(kRateWindowEvents).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "router/request_router.h"

namespace reflect {

class AdmissionController {
 public:
  explicit AdmissionController(AdmissionLimits limits);

  // Admits a request of `prompt_tokens` that may generate up to `max_output_tokens` (its
  // resolved max_tokens), counted as queued with prompt_tokens + max_output_tokens tokens, or
  // refuses it with RESOURCE_EXHAUSTED carrying RetryAfter (router/http_errors.h). A request bigger
  // than the whole token bound is admitted only into an empty queue, so it waits its turn instead
  // of being refused forever. Negative counts are taken as 0.
  absl::Status TryAdmit(int64_t prompt_tokens, int64_t max_output_tokens, absl::Time now);

  // The admitted request got its first token: queued → running. The counts are those of TryAdmit.
  void FirstToken(int64_t prompt_tokens, int64_t max_output_tokens, absl::Time now);
  // The admitted request ended before its first token. The counts are those of TryAdmit.
  void EndQueued(int64_t prompt_tokens, int64_t max_output_tokens, absl::Time now);
  // The admitted request ended after its first token.
  void EndRunning(absl::Time now);

  // The hint a refusal right now would carry (for a replica-side refusal without its own hint).
  absl::Duration RetryHint(absl::Time now) const;

  // Queued requests and their prompt tokens (RouterLoad.queued_prompt_tokens), running requests.
  RouterLoad Load() const;
  // Tokens of the queued requests as the bound counts them: prompt + max_tokens of each.
  int64_t QueuedTokens() const;

  const AdmissionLimits& limits() const { return limits_; }

 private:
  // Recent departure times, for a rate over the last kRateWindowEvents within kRateWindow.
  static constexpr int kRateWindowEvents = 64;
  static constexpr absl::Duration kRateWindow = absl::Seconds(60);
  class DepartureRate {
   public:
    void Record(absl::Time now);
    // Departures per second over the window, 0 when fewer than two recent ones.
    double PerSecond(absl::Time now) const;

   private:
    std::array<absl::Time, kRateWindowEvents> times_{};
    int64_t recorded_ = 0;
  };

  void LeaveQueueLocked(int64_t prompt_tokens, int64_t max_output_tokens);
  absl::Duration HintLocked(int64_t backlog, const DepartureRate& rate, absl::Time now) const;
  absl::Status RefuseLocked(const char* what, int64_t backlog, const DepartureRate& rate,
                            absl::Time now) const;

  const AdmissionLimits limits_;
  mutable std::mutex mutex_;
  int64_t queued_requests_ = 0;       // guarded by mutex_
  int64_t queued_prompt_tokens_ = 0;  // guarded by mutex_
  int64_t queued_tokens_ = 0;         // guarded by mutex_: prompt + max_tokens
  int64_t running_requests_ = 0;      // guarded by mutex_
  DepartureRate first_tokens_;        // guarded by mutex_: the queue's drain
  DepartureRate ends_;                // guarded by mutex_: the in-flight drain
};

}  // namespace reflect
