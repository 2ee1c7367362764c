// The router's admission control: bounds by queued requests, queued tokens (prompt + max_tokens)
// and requests in flight, refusals with a retry hint from the recent drain rate, and the counts it
// reports.
#include "router/admission.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>

#include "router/http_errors.h"

namespace reflect {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

AdmissionLimits Limits(int64_t queued, int64_t tokens, int64_t in_flight) {
  return AdmissionLimits{.max_queued_requests = queued,
                         .max_queued_tokens = tokens,
                         .max_in_flight_requests = in_flight,
                         .min_retry_after = absl::Milliseconds(500),
                         .max_retry_after = absl::Seconds(60),
                         .max_queue_time = absl::Seconds(60)};
}

std::optional<int64_t> HintMilliseconds(const absl::Status& status) {
  const std::optional<std::chrono::milliseconds> hint = RetryAfter(status);
  if (!hint.has_value()) return std::nullopt;
  return hint->count();
}

TEST(AdmissionTest, QueueBoundByRequests) {
  AdmissionController admission(Limits(2, 1000, 100));
  EXPECT_TRUE(admission.TryAdmit(10, 0, kStart).ok());
  EXPECT_TRUE(admission.TryAdmit(10, 0, kStart).ok());
  const absl::Status refused = admission.TryAdmit(10, 0, kStart);
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  // No drain seen yet: the backlog is not moving, so the hint is the maximum.
  EXPECT_EQ(HintMilliseconds(refused), 60'000);
  // A first token frees a queue place.
  admission.FirstToken(10, 0, kStart + absl::Seconds(1));
  EXPECT_TRUE(admission.TryAdmit(10, 0, kStart + absl::Seconds(1)).ok());
  EXPECT_EQ(admission.Load().queued_requests, 2);
  EXPECT_EQ(admission.Load().running_requests, 1);
}

TEST(AdmissionTest, QueueBoundByPromptTokensAlone) {
  AdmissionController admission(Limits(100, 100, 100));
  EXPECT_TRUE(admission.TryAdmit(60, 0, kStart).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(admission.TryAdmit(50, 0, kStart)));
  EXPECT_TRUE(admission.TryAdmit(40, 0, kStart).ok());
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 100);
  admission.EndQueued(60, 0, kStart);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 40);
  EXPECT_EQ(admission.Load().queued_requests, 1);
}

TEST(AdmissionTest, QueueBoundCountsPromptPlusMaxTokens) {
  AdmissionController admission(Limits(100, 1000, 100));
  // 100 + 500 = 600 tokens.
  ASSERT_TRUE(admission.TryAdmit(100, 500, kStart).ok());
  EXPECT_EQ(admission.QueuedTokens(), 600);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 100);
  // A short prompt asking for much output does not fit: 10 + 400 > 400 left.
  const absl::Status refused = admission.TryAdmit(10, 400, kStart);
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_NE(refused.message().find("prompt + max_tokens"), absl::string_view::npos) << refused;
  EXPECT_TRUE(RetryAfter(refused).has_value());
  // Exactly what is left does.
  ASSERT_TRUE(admission.TryAdmit(10, 390, kStart).ok());
  EXPECT_EQ(admission.QueuedTokens(), 1000);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 110);
  // Leaving the queue gives back prompt and output tokens, whichever way it leaves.
  admission.FirstToken(100, 500, kStart);
  EXPECT_EQ(admission.QueuedTokens(), 400);
  admission.EndQueued(10, 390, kStart);
  EXPECT_EQ(admission.QueuedTokens(), 0);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 0);
  EXPECT_EQ(admission.Load().queued_requests, 0);
  EXPECT_EQ(admission.Load().running_requests, 1);
}

TEST(AdmissionTest, OversizedRequestOnlyIntoAnEmptyQueue) {
  AdmissionController admission(Limits(100, 100, 100));
  // Bigger than the whole bound by its output alone: admitted into the empty queue.
  ASSERT_TRUE(admission.TryAdmit(1, 5000, kStart).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(admission.TryAdmit(1, 0, kStart)));
  admission.EndQueued(1, 5000, kStart);
  EXPECT_TRUE(admission.TryAdmit(1, 0, kStart).ok());
}

TEST(AdmissionTest, OversizedPromptOnlyIntoAnEmptyQueue) {
  AdmissionController admission(Limits(100, 100, 100));
  EXPECT_TRUE(admission.TryAdmit(500, 0, kStart).ok());
  EXPECT_TRUE(absl::IsResourceExhausted(admission.TryAdmit(1, 0, kStart)));
  admission.FirstToken(500, 0, kStart);
  EXPECT_TRUE(admission.TryAdmit(1, 0, kStart).ok());
}

TEST(AdmissionTest, InFlightCap) {
  AdmissionController admission(Limits(100, 1000, 2));
  ASSERT_TRUE(admission.TryAdmit(1, 0, kStart).ok());
  ASSERT_TRUE(admission.TryAdmit(1, 0, kStart).ok());
  admission.FirstToken(1, 0, kStart);
  admission.FirstToken(1, 0, kStart);
  const absl::Status refused = admission.TryAdmit(1, 0, kStart);
  EXPECT_TRUE(absl::IsResourceExhausted(refused));
  EXPECT_NE(refused.message().find("in flight"), absl::string_view::npos) << refused;
  admission.EndRunning(kStart + absl::Seconds(1));
  EXPECT_TRUE(admission.TryAdmit(1, 0, kStart + absl::Seconds(1)).ok());
}

TEST(AdmissionTest, HintFollowsTheDrainRate) {
  AdmissionController admission(Limits(4, 1000, 100));
  // Four first tokens one second apart: a drain of about one request per second.
  for (int second = 0; second < 4; ++second) {
    ASSERT_TRUE(admission.TryAdmit(1, 0, kStart + absl::Seconds(second)).ok());
    admission.FirstToken(1, 0, kStart + absl::Seconds(second));
  }
  for (int request = 0; request < 4; ++request) {
    ASSERT_TRUE(admission.TryAdmit(1, 0, kStart + absl::Seconds(3)).ok());
  }
  // 3 departures after the oldest over 3 s: 1/s; 4 queued → 4 s.
  EXPECT_EQ(HintMilliseconds(admission.TryAdmit(1, 0, kStart + absl::Seconds(3))), 4'000);
  // A second later nothing more drained: the rate is 3 over 4 s, the hint longer.
  EXPECT_EQ(HintMilliseconds(admission.TryAdmit(1, 0, kStart + absl::Seconds(4))), 5'333);
}

TEST(AdmissionTest, HintIsClamped) {
  AdmissionController admission(Limits(1, 1000, 100));
  // A fast drain: 20 first tokens in 10 ms → a tiny estimate, raised to the minimum.
  for (int request = 0; request < 20; ++request) {
    const absl::Time now = kStart + absl::Microseconds(500 * request);
    ASSERT_TRUE(admission.TryAdmit(1, 0, now).ok());
    admission.FirstToken(1, 0, now);
  }
  ASSERT_TRUE(admission.TryAdmit(1, 0, kStart + absl::Milliseconds(10)).ok());
  EXPECT_EQ(HintMilliseconds(admission.TryAdmit(1, 0, kStart + absl::Milliseconds(10))), 500);
  // A minute later the old departures have left the window: no drain, the maximum.
  EXPECT_EQ(HintMilliseconds(admission.TryAdmit(1, 0, kStart + absl::Seconds(61))), 60'000);
  EXPECT_EQ(admission.RetryHint(kStart + absl::Seconds(61)), absl::Seconds(60));
}

TEST(AdmissionTest, CountsFollowTheLifecycle) {
  AdmissionController admission(Limits(10, 1000, 10));
  ASSERT_TRUE(admission.TryAdmit(7, 0, kStart).ok());
  ASSERT_TRUE(admission.TryAdmit(5, 0, kStart).ok());
  EXPECT_EQ(admission.Load().queued_requests, 2);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 12);
  admission.FirstToken(7, 0, kStart);
  admission.EndQueued(5, 0, kStart);
  EXPECT_EQ(admission.Load().queued_requests, 0);
  EXPECT_EQ(admission.Load().queued_prompt_tokens, 0);
  EXPECT_EQ(admission.Load().running_requests, 1);
  admission.EndRunning(kStart);
  EXPECT_EQ(admission.Load().running_requests, 0);
}

}  // namespace
}  // namespace reflect
