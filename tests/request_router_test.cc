// The router's core against real reflect-worker processes on the tiny model: concurrent requests
// equal their alone runs, load spreading and prefix affinity across two replicas, stop strings,
// cancellation freeing the replica's blocks, admission refusals, the queue-time deadline,
// priorities reaching the replica's scheduler, a replica killed mid-load, and no replica ready.
// Every test starts its own workers (--port 0), so tests may run in parallel.
#include "router/request_router.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "router/http_errors.h"
#include "router/replica_client.h"
#include "router/router_metrics.h"
#include "tests/support/child_process.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using testing::TestModelPath;
using testing::WorkerProcess;

constexpr absl::Duration kTimeout = absl::Seconds(60);

const Tokenizer& TinyTokenizer() {
  static const Tokenizer* const tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(TestModelPath("tiny"));
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *tokenizer;
}

// Collects one request's output; checks the sink contract (serial calls, nothing after the end).
class CollectingSink final : public ResponseSink {
 public:
  void OnPieces(std::vector<OutputPiece> pieces) override {
    EXPECT_EQ(calls_in_progress_.fetch_add(1), 0) << "sink called concurrently";
    Collect(std::move(pieces));
    calls_in_progress_.fetch_sub(1);
  }
  void OnFinished(const absl::StatusOr<GenerationOutcome>& outcome) override {
    EXPECT_EQ(calls_in_progress_.fetch_add(1), 0) << "sink called concurrently";
    Finish(outcome);
    calls_in_progress_.fetch_sub(1);
  }

  void Collect(std::vector<OutputPiece> pieces) {
    const std::lock_guard lock(mutex_);
    EXPECT_FALSE(outcome_.has_value()) << "pieces after OnFinished";
    EXPECT_FALSE(pieces.empty());
    for (const OutputPiece& piece : pieces) {
      text_ += piece.text;
      token_ids_.insert(token_ids_.end(), piece.token_ids.begin(), piece.token_ids.end());
    }
    ++piece_calls_;
    changed_.notify_all();
  }
  void Finish(const absl::StatusOr<GenerationOutcome>& outcome) {
    const std::lock_guard lock(mutex_);
    EXPECT_FALSE(outcome_.has_value()) << "OnFinished twice";
    outcome_ = outcome;
    changed_.notify_all();
  }

  // The outcome, waited for; a DEADLINE_EXCEEDED stand-in when it never comes.
  absl::StatusOr<GenerationOutcome> Wait(absl::Duration timeout = kTimeout) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                           [this] { return outcome_.has_value(); })) {
      return absl::DeadlineExceededError("the sink never got OnFinished");
    }
    return *outcome_;
  }
  bool WaitForPieces(absl::Duration timeout = kTimeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                             [this] { return piece_calls_ > 0 || outcome_.has_value(); });
  }
  std::vector<int32_t> token_ids() {
    const std::lock_guard lock(mutex_);
    return token_ids_;
  }
  std::string text() {
    const std::lock_guard lock(mutex_);
    return text_;
  }
  bool finished() {
    const std::lock_guard lock(mutex_);
    return outcome_.has_value();
  }

 private:
  std::atomic<int> calls_in_progress_{0};
  std::mutex mutex_;
  std::condition_variable changed_;
  int piece_calls_ = 0;
  std::string text_;
  std::vector<int32_t> token_ids_;
  std::optional<absl::StatusOr<GenerationOutcome>> outcome_;
};

std::vector<int32_t> PromptTokens(int index, int length) {
  std::vector<int32_t> prompt;
  for (int position = 0; position < length; ++position) {
    prompt.push_back((index * 1009 + position * 7919) % 120000);
  }
  return prompt;
}

RoutedRequest Request(int index, int prompt_length, int max_tokens) {
  RoutedRequest request;
  request.request_id = absl::StrCat("request-", index);
  request.prompt_token_ids = PromptTokens(index, prompt_length);
  request.sampling.temperature = index % 2 == 0 ? 0.0 : 0.8;
  request.sampling.top_p = 0.95;
  request.sampling.seed = 1000 + index;
  request.sampling.max_tokens = max_tokens;
  request.sampling.ignore_eos = true;
  request.received_time = absl::Now();
  return request;
}

// Workers with the test flags (2 engine threads unless `threads` says otherwise).
std::vector<std::unique_ptr<WorkerProcess>> StartWorkers(int count, int threads = 2) {
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int index = 0; index < count; ++index) {
    workers.push_back(std::make_unique<WorkerProcess>(
        TestModelPath("tiny").string(),
        std::vector<std::string>{"--threads", absl::StrCat(threads)}));
    EXPECT_FALSE(workers.back()->address().empty()) << "worker " << index << " did not start";
  }
  return workers;
}

std::unique_ptr<RequestRouter> StartRouter(
    const std::vector<std::unique_ptr<WorkerProcess>>& workers, AdmissionLimits limits = {},
    RouterMetrics* metrics = nullptr) {
  RequestRouterOptions options;
  for (const auto& worker : workers) options.replica_addresses.push_back(worker->address());
  options.admission = limits;
  options.poll_interval = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(options, TinyTokenizer(), metrics);
  EXPECT_TRUE(router.ok()) << router.status();
  if (!router.ok()) return nullptr;
  // All of them in rotation, so the tests below know where requests may go.
  const absl::Time deadline = absl::Now() + kTimeout;
  while (absl::Now() < deadline) {
    const std::vector<ReplicaStatus> replicas = (*router)->Replicas();
    if (std::all_of(replicas.begin(), replicas.end(),
                    [](const ReplicaStatus& replica) { return replica.in_rotation; })) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE((*router)->ready());
  return *std::move(router);
}

struct Submitted {
  std::shared_ptr<CollectingSink> sink = std::make_shared<CollectingSink>();
  std::unique_ptr<RequestHandle> handle;
};

Submitted Submit(RequestRouter& router, RoutedRequest request) {
  Submitted submitted;
  absl::StatusOr<std::unique_ptr<RequestHandle>> handle =
      router.Submit(std::move(request), submitted.sink);
  EXPECT_TRUE(handle.ok()) << handle.status();
  if (handle.ok()) submitted.handle = *std::move(handle);
  return submitted;
}

// A replica's load straight from its GetLoad.
absl::StatusOr<ReplicaLoadReport> GetLoad(const std::string& address) {
  ReplicaClient client(address);
  std::mutex mutex;
  std::condition_variable done;
  std::optional<absl::StatusOr<ReplicaLoadReport>> result;
  client.GetLoad(absl::Seconds(5), [&](absl::StatusOr<ReplicaLoadReport> report) {
    const std::lock_guard lock(mutex);
    result = std::move(report);
    done.notify_all();
  });
  std::unique_lock lock(mutex);
  done.wait(lock, [&] { return result.has_value(); });
  return *result;
}

// The value of the series of `family` whose labels include `label`, from the text format.
std::optional<double> MetricValue(const std::string& text, const std::string& family,
                                  const std::string& label) {
  for (const absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, family + "{") || !absl::StrContains(line, label)) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return std::nullopt;
}

TEST(RequestRouterTest, ConcurrentRequestsEqualTheirAloneRuns) {
  const auto workers = StartWorkers(1);
  RouterMetrics metrics("tiny");
  const std::unique_ptr<RequestRouter> router = StartRouter(workers, {}, &metrics);
  ASSERT_NE(router, nullptr);
  constexpr int kRequests = 32;
  std::vector<std::vector<int32_t>> alone(kRequests);
  for (int index = 0; index < kRequests; ++index) {
    Submitted submitted = Submit(*router, Request(index, 6 + 7 * index % 40, 6));
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(outcome->reason, GenerationStopReason::kLength);
    EXPECT_EQ(outcome->usage.completion_tokens, 6);
    alone[index] = submitted.sink->token_ids();
    ASSERT_EQ(alone[index].size(), 6u);
  }
  std::vector<Submitted> together;
  for (int index = 0; index < kRequests; ++index) {
    together.push_back(Submit(*router, Request(index, 6 + 7 * index % 40, 6)));
  }
  for (int index = 0; index < kRequests; ++index) {
    const absl::StatusOr<GenerationOutcome> outcome = together[index].sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(together[index].sink->token_ids(), alone[index]) << "request " << index;
    EXPECT_EQ(outcome->usage.prompt_tokens, 6 + 7 * index % 40);
    EXPECT_GT(outcome->timings.e2e_seconds, 0.0);
    EXPECT_LE(outcome->timings.time_to_first_token_seconds, outcome->timings.e2e_seconds);
    EXPECT_FALSE(outcome->replica_id.empty());
  }
  const RouterLoad load = router->Load();
  EXPECT_EQ(load.queued_requests, 0);
  EXPECT_EQ(load.running_requests, 0);
  const std::string text = metrics.Serialize();
  EXPECT_EQ(MetricValue(text, "reflect_requests_total", "outcome=\"ok\""), 2 * kRequests) << text;
  // 5 gaps per request of 6 tokens (tokens arriving together share a gap).
  EXPECT_EQ(MetricValue(text, "reflect_inter_token_latency_seconds_count", "tiny"),
            2 * kRequests * 5)
      << text;
}

TEST(RequestRouterTest, TwoReplicasSpreadLoadAndKeepPrefixAffinity) {
  const auto workers = StartWorkers(2, /*threads=*/1);
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  // Spread: concurrent requests land on both replicas.
  std::vector<Submitted> spread;
  for (int index = 0; index < 8; ++index) spread.push_back(Submit(*router, Request(index, 12, 8)));
  std::set<std::string> used;
  for (Submitted& submitted : spread) {
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    used.insert(outcome->replica_id);
  }
  EXPECT_EQ(used.size(), 2u);

  // Two long prompts submitted together go to different replicas and get cached there.
  std::vector<int32_t> prompts[2] = {PromptTokens(101, 160), PromptTokens(202, 160)};
  std::string cached_on[2];
  {
    std::vector<Submitted> first;
    for (int group = 0; group < 2; ++group) {
      RoutedRequest request = Request(group, 1, 2);
      request.prompt_token_ids = prompts[group];
      first.push_back(Submit(*router, std::move(request)));
    }
    for (int group = 0; group < 2; ++group) {
      const absl::StatusOr<GenerationOutcome> outcome = first[group].sink->Wait();
      ASSERT_TRUE(outcome.ok()) << outcome.status();
      cached_on[group] = outcome->replica_id;
    }
  }
  ASSERT_NE(cached_on[0], cached_on[1]);
  // Let the replicas publish their summaries and the router poll them.
  absl::SleepFor(absl::Milliseconds(500));
  // With both replicas idle, load alone would pick the first replica for both; affinity sends each
  // follow-up (same prefix, new suffix) to where its prefix is cached. The second group goes
  // first, so its replica is not the load-only answer.
  for (const int group : {1, 0}) {
    RoutedRequest request = Request(group, 1, 2);
    request.prompt_token_ids = prompts[group];
    const std::vector<int32_t> suffix = PromptTokens(300 + group, 20);
    request.prompt_token_ids.insert(request.prompt_token_ids.end(), suffix.begin(), suffix.end());
    Submitted submitted = Submit(*router, std::move(request));
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(outcome->replica_id, cached_on[group]) << "group " << group;
    // The replica computed the shared 160 tokens once: 10 full blocks of 16 came from its cache.
    EXPECT_EQ(outcome->usage.cached_prompt_tokens, 160) << "group " << group;
  }
}

TEST(RequestRouterTest, StopStringEndsTheRequestAndFreesTheReplica) {
  const auto workers = StartWorkers(1);
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  // What the greedy model writes, then a stop string taken from its middle.
  Submitted reference = Submit(*router, Request(0, 10, 24));
  ASSERT_TRUE(reference.sink->Wait().ok());
  ASSERT_EQ(reference.sink->token_ids().size(), 24u);
  const std::string text = reference.sink->text();
  // A few characters from the middle, cut at UTF-8 character boundaries.
  const auto boundary = [&text](size_t position) {
    while (position < text.size() && (static_cast<unsigned char>(text[position]) & 0xC0) == 0x80) {
      ++position;
    }
    return position;
  };
  const size_t stop_begin = boundary(text.size() / 3);
  const size_t stop_end = boundary(stop_begin + 4);
  ASSERT_LT(stop_begin, stop_end);
  const std::string stop = text.substr(stop_begin, stop_end - stop_begin);
  const size_t match = text.find(stop);

  RoutedRequest request = Request(0, 10, 2000);
  request.sampling.stop = {stop};
  Submitted stopped = Submit(*router, std::move(request));
  const absl::StatusOr<GenerationOutcome> outcome = stopped.sink->Wait();
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->reason, GenerationStopReason::kStopString);
  EXPECT_EQ(outcome->matched_stop, stop);
  EXPECT_EQ(stopped.sink->text(), text.substr(0, match));
  EXPECT_LT(outcome->usage.completion_tokens, 24);
  // The replica stream was cancelled: its sequence is gone long before 2000 tokens.
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  absl::StatusOr<ReplicaLoadReport> load = GetLoad(workers[0]->address());
  while (absl::Now() < deadline && load.ok() && load->running_requests != 0) {
    absl::SleepFor(absl::Milliseconds(20));
    load = GetLoad(workers[0]->address());
  }
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->running_requests, 0);
}

TEST(RequestRouterTest, CancelMidStreamFreesTheSequence) {
  const auto workers = StartWorkers(1);
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  Submitted submitted = Submit(*router, Request(3, 40, 4000));
  ASSERT_TRUE(submitted.sink->WaitForPieces());
  ASSERT_FALSE(submitted.sink->finished());
  submitted.handle->Cancel();
  submitted.handle->Cancel();  // idempotent
  const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
  EXPECT_TRUE(absl::IsCancelled(outcome.status())) << outcome.status();
  // Within a second the replica runs nothing and every KV block is free (or only cached).
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  absl::StatusOr<ReplicaLoadReport> load = GetLoad(workers[0]->address());
  while (
      absl::Now() < deadline && load.ok() &&
      (load->running_requests != 0 || load->kv_cache_free_blocks != load->kv_cache_total_blocks)) {
    absl::SleepFor(absl::Milliseconds(20));
    load = GetLoad(workers[0]->address());
  }
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->running_requests, 0);
  EXPECT_EQ(load->kv_cache_free_blocks, load->kv_cache_total_blocks);
  EXPECT_EQ(router->Load().running_requests, 0);
  submitted.handle->Cancel();  // after the end: harmless
}

TEST(RequestRouterTest, FullQueueIsRefusedAtOnceWithARetryHint) {
  const auto workers = StartWorkers(1);
  const std::unique_ptr<RequestRouter> router =
      StartRouter(workers, AdmissionLimits{.max_queued_requests = 2});
  ASSERT_NE(router, nullptr);
  // Long prompts: their prefill keeps them queued (no first token) for many steps.
  std::vector<Submitted> admitted;
  admitted.push_back(Submit(*router, Request(1, 2000, 1000)));
  admitted.push_back(Submit(*router, Request(2, 2000, 1000)));
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<RequestHandle>> third =
      router->Submit(Request(3, 2000, 1000), std::make_shared<CollectingSink>());
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsResourceExhausted(third.status())) << third.status();
  EXPECT_LT(took, absl::Milliseconds(50));
  const std::optional<std::chrono::milliseconds> hint = RetryAfter(third.status());
  ASSERT_TRUE(hint.has_value());
  EXPECT_GE(*hint, std::chrono::milliseconds(500));
  EXPECT_LE(*hint, std::chrono::milliseconds(60'000));
  for (Submitted& submitted : admitted) submitted.handle->Cancel();
  for (Submitted& submitted : admitted) {
    EXPECT_TRUE(absl::IsCancelled(submitted.sink->Wait().status()));
  }
  EXPECT_EQ(router->Load().queued_requests, 0);
}

// Polls the replica's GetLoad until `done` holds or `timeout` passes; returns the last report.
template <typename Done>
absl::StatusOr<ReplicaLoadReport> WaitForLoad(const std::string& address, Done done,
                                              absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<ReplicaLoadReport> load = GetLoad(address);
  while (absl::Now() < deadline && load.ok() && !done(*load)) {
    absl::SleepFor(absl::Milliseconds(10));
    load = GetLoad(address);
  }
  return load;
}

TEST(RequestRouterTest, QueueTimeDeadlineEndsAWaitingRequest) {
  // One sequence at a time: while the long request runs, the next one waits on the replica.
  WorkerProcess worker(TestModelPath("tiny").string(), {"--threads", "1", "--max-num-seqs", "1"});
  ASSERT_FALSE(worker.address().empty());
  RequestRouterOptions options;
  options.replica_addresses = {worker.address()};
  options.poll_interval = absl::Milliseconds(50);
  options.admission.max_queue_time = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<RequestRouter>> created =
      RequestRouter::Create(options, TinyTokenizer(), nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  RequestRouter& router = **created;
  ASSERT_TRUE(router.WaitUntilReady(kTimeout));

  Submitted running = Submit(router, Request(1, 8, 4000));
  ASSERT_TRUE(running.sink->WaitForPieces());
  const absl::Time start = absl::Now();
  Submitted waiting = Submit(router, Request(2, 8, 4));
  const absl::StatusOr<GenerationOutcome> outcome = waiting.sink->Wait(absl::Seconds(10));
  const absl::Duration took = absl::Now() - start;
  EXPECT_TRUE(absl::IsResourceExhausted(outcome.status())) << outcome.status();
  EXPECT_NE(outcome.status().message().find("in the queue without being scheduled"),
            std::string::npos)
      << outcome.status();
  const std::optional<std::chrono::milliseconds> hint = RetryAfter(outcome.status());
  ASSERT_TRUE(hint.has_value());
  EXPECT_GE(*hint, std::chrono::milliseconds(500));
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(1));
  EXPECT_TRUE(waiting.sink->token_ids().empty());

  // The replica dropped it (its stream was cancelled) and still runs the first one, which the
  // deadline does not touch: it had its first token.
  const absl::StatusOr<ReplicaLoadReport> load = WaitForLoad(
      worker.address(),
      [](const ReplicaLoadReport& report) { return report.waiting_requests == 0; },
      absl::Seconds(1));
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->waiting_requests, 0);
  EXPECT_EQ(load->running_requests, 1);
  EXPECT_FALSE(running.sink->finished());
  EXPECT_EQ(router.Load().queued_requests, 0);
  EXPECT_EQ(router.Load().running_requests, 1);

  running.handle->Cancel();
  EXPECT_TRUE(absl::IsCancelled(running.sink->Wait().status()));
}

TEST(RequestRouterTest, HigherPriorityIsServedFirst) {
  WorkerProcess worker(TestModelPath("tiny").string(), {"--threads", "1", "--max-num-seqs", "1"});
  ASSERT_FALSE(worker.address().empty());
  RequestRouterOptions options;
  options.replica_addresses = {worker.address()};
  options.poll_interval = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<RequestRouter>> created =
      RequestRouter::Create(options, TinyTokenizer(), nullptr);
  ASSERT_TRUE(created.ok()) << created.status();
  RequestRouter& router = **created;
  ASSERT_TRUE(router.WaitUntilReady(kTimeout));
  const auto waiting_on_replica = [&worker](int64_t count) {
    const absl::StatusOr<ReplicaLoadReport> load = WaitForLoad(
        worker.address(),
        [count](const ReplicaLoadReport& report) { return report.waiting_requests == count; });
    return load.ok() && load->waiting_requests == count;
  };

  // The replica's only sequence slot is taken.
  Submitted running = Submit(router, Request(1, 8, 4000));
  ASSERT_TRUE(running.sink->WaitForPieces());
  // A low-priority request arrives first and waits on the replica; a high-priority one after it.
  RoutedRequest low_request = Request(2, 8, 4);
  low_request.priority = -10;
  const absl::Time low_received = low_request.received_time;
  Submitted low = Submit(router, std::move(low_request));
  ASSERT_TRUE(waiting_on_replica(1));
  RoutedRequest high_request = Request(3, 8, 4);
  high_request.priority = 10;
  const absl::Time high_received = high_request.received_time;
  Submitted high = Submit(router, std::move(high_request));
  ASSERT_TRUE(waiting_on_replica(2));
  ASSERT_FALSE(running.sink->finished());

  // Freeing the slot lets the replica's scheduler pick: the high-priority one runs before the
  // low-priority one gets its first token.
  running.handle->Cancel();
  EXPECT_TRUE(absl::IsCancelled(running.sink->Wait().status()));
  const absl::StatusOr<GenerationOutcome> high_outcome = high.sink->Wait();
  const absl::StatusOr<GenerationOutcome> low_outcome = low.sink->Wait();
  ASSERT_TRUE(high_outcome.ok()) << high_outcome.status();
  ASSERT_TRUE(low_outcome.ok()) << low_outcome.status();
  const absl::Time high_first_token =
      high_received + absl::Seconds(high_outcome->timings.time_to_first_token_seconds);
  const absl::Time low_first_token =
      low_received + absl::Seconds(low_outcome->timings.time_to_first_token_seconds);
  EXPECT_LT(high_first_token, low_first_token);
}

TEST(RequestRouterTest, KilledReplicaFailsItsRequestsOnly) {
  auto workers = StartWorkers(2, /*threads=*/1);
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  const std::string killed = workers[1]->address();
  const std::string live = workers[0]->address();
  std::vector<Submitted> load;
  for (int index = 0; index < 6; ++index) load.push_back(Submit(*router, Request(index, 12, 120)));
  for (Submitted& submitted : load) ASSERT_TRUE(submitted.sink->WaitForPieces());
  workers[1]->process().Signal(SIGKILL);
  int ok = 0;
  int unavailable = 0;
  for (Submitted& submitted : load) {
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    if (outcome.ok()) {
      ++ok;
      EXPECT_EQ(outcome->replica_id, live);
      EXPECT_EQ(outcome->usage.completion_tokens, 120);
    } else {
      ++unavailable;
      EXPECT_TRUE(absl::IsUnavailable(outcome.status())) << outcome.status();
      EXPECT_NE(outcome.status().message().find(killed), std::string_view::npos)
          << outcome.status();
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(unavailable, 0);
  EXPECT_TRUE(router->ready());
  for (const ReplicaStatus& replica : router->Replicas()) {
    EXPECT_EQ(replica.in_rotation, replica.address == live) << replica.address;
  }
  for (int index = 0; index < 3; ++index) {
    Submitted later = Submit(*router, Request(10 + index, 8, 4));
    const absl::StatusOr<GenerationOutcome> outcome = later.sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(outcome->replica_id, live);
  }
}

TEST(RequestRouterTest, ReplicaRefusalTriesTheNextReplica) {
  // The first replica runs one sequence and queues one more; beyond that it refuses.
  const std::vector<std::string> limited_flags = {
      "--threads", "1", "--max-num-seqs", "1", "--max-waiting-requests", "1"};
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(std::make_unique<WorkerProcess>(TestModelPath("tiny").string(), limited_flags));
  workers.push_back(std::make_unique<WorkerProcess>(TestModelPath("tiny").string(),
                                                    std::vector<std::string>{"--threads", "1"}));
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  std::vector<Submitted> requests;
  for (int index = 0; index < 6; ++index) {
    requests.push_back(Submit(*router, Request(index, 8, 40)));
  }
  int on_limited = 0;
  for (Submitted& submitted : requests) {
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    if (outcome->replica_id == workers[0]->address()) ++on_limited;
  }
  EXPECT_LE(on_limited, 2);
}

TEST(RequestRouterTest, EveryReplicaRefusingEndsWithItsRetryHint) {
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(std::make_unique<WorkerProcess>(
      TestModelPath("tiny").string(),
      std::vector<std::string>{"--max-num-seqs", "1", "--max-waiting-requests", "1"}));
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  std::vector<Submitted> requests;
  for (int index = 0; index < 4; ++index) {
    requests.push_back(Submit(*router, Request(index, 8, 2000)));
  }
  // One runs and one waits (how many count as waiting when the others arrive depends on how fast
  // the engine admits the first): the rest are refused at once, with the replica's own hint (its
  // trailing "retry-after-ms").
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline &&
         std::none_of(requests.begin(), requests.end(),
                      [](Submitted& submitted) { return submitted.sink->finished(); })) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(absl::Milliseconds(200));
  int refused = 0;
  for (Submitted& submitted : requests) {
    if (!submitted.sink->finished()) continue;
    const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait();
    EXPECT_TRUE(absl::IsResourceExhausted(outcome.status())) << outcome.status();
    ++refused;
    EXPECT_EQ(RetryAfter(outcome.status()), std::chrono::milliseconds(1000));
    EXPECT_NE(outcome.status().message().find("every replica is at capacity"), std::string::npos);
  }
  EXPECT_GE(refused, 1);
  EXPECT_LE(refused, 3);
  for (Submitted& submitted : requests) submitted.handle->Cancel();
  for (Submitted& submitted : requests) EXPECT_FALSE(submitted.sink->Wait().ok());
}

TEST(RequestRouterTest, DeadlineEndsTheRequest) {
  const auto workers = StartWorkers(1);
  const std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  RoutedRequest request = Request(1, 8, 4000);
  request.deadline = absl::Now() + absl::Milliseconds(300);
  Submitted submitted = Submit(*router, std::move(request));
  const absl::StatusOr<GenerationOutcome> outcome = submitted.sink->Wait(absl::Seconds(10));
  EXPECT_TRUE(absl::IsDeadlineExceeded(outcome.status())) << outcome.status();
  EXPECT_EQ(router->Load().running_requests, 0);
}

TEST(RequestRouterTest, DestroyingTheRouterEndsRequestsUnavailable) {
  const auto workers = StartWorkers(1);
  std::unique_ptr<RequestRouter> router = StartRouter(workers);
  ASSERT_NE(router, nullptr);
  std::vector<Submitted> requests;
  for (int index = 0; index < 3; ++index) {
    requests.push_back(Submit(*router, Request(index, 8, 4000)));
  }
  for (Submitted& submitted : requests) ASSERT_TRUE(submitted.sink->WaitForPieces());
  router.reset();
  for (Submitted& submitted : requests) {
    ASSERT_TRUE(submitted.sink->finished());
    EXPECT_TRUE(absl::IsUnavailable(submitted.sink->Wait().status()));
    submitted.handle->Cancel();  // the router is gone: still harmless
  }
}

TEST(RequestRouterTest, NoReplicaReadyIsUnavailableAtOnce) {
  // A port nothing listens on: bound, read back and closed again.
  const int socket_fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(socket_fd, 0);
  sockaddr_in bound{};
  bound.sin_family = AF_INET;
  bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(bound);
  ASSERT_EQ(bind(socket_fd, reinterpret_cast<sockaddr*>(&bound), sizeof(bound)), 0);
  ASSERT_EQ(getsockname(socket_fd, reinterpret_cast<sockaddr*>(&bound), &length), 0);
  close(socket_fd);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(bound.sin_port));
  RequestRouterOptions options;
  options.replica_addresses = {address};
  options.poll_interval = absl::Milliseconds(50);
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(options, TinyTokenizer(), nullptr);
  ASSERT_TRUE(router.ok()) << router.status();
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto sink = std::make_shared<CollectingSink>();
    const absl::Time start = absl::Now();
    absl::StatusOr<std::unique_ptr<RequestHandle>> handle =
        (*router)->Submit(Request(0, 8, 4), sink);
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(50));
    EXPECT_TRUE(absl::IsUnavailable(handle.status())) << handle.status();
    EXPECT_FALSE(sink->finished());
    EXPECT_FALSE((*router)->ready());
    EXPECT_FALSE((*router)->WaitUntilReady(absl::Milliseconds(200)));
  }
}

TEST(RequestRouterTest, ReplicaServingAnotherModelIsNeverRoutedTo) {
  WorkerProcess other(TestModelPath("tiny").string(), {"--served_model_name", "not-tiny"});
  WorkerProcess same(TestModelPath("tiny").string(), {"--served_model_name", "tiny"});
  ASSERT_FALSE(other.address().empty());
  ASSERT_FALSE(same.address().empty());
  RequestRouterOptions options;
  options.replica_addresses = {other.address()};
  options.poll_interval = absl::Milliseconds(50);
  options.model = "tiny";
  absl::StatusOr<std::unique_ptr<RequestRouter>> alone =
      RequestRouter::Create(options, TinyTokenizer(), nullptr);
  ASSERT_TRUE(alone.ok()) << alone.status();
  // It answers its polls, yet never enters rotation.
  EXPECT_FALSE((*alone)->WaitUntilReady(absl::Seconds(1)));
  EXPECT_FALSE((*alone)->Replicas().at(0).in_rotation);
  const auto refused = std::make_shared<CollectingSink>();
  EXPECT_TRUE(absl::IsUnavailable((*alone)->Submit(Request(0, 8, 4), refused).status()));

  // Beside a replica of the right model, every request goes to that one.
  options.replica_addresses = {other.address(), same.address()};
  absl::StatusOr<std::unique_ptr<RequestRouter>> router =
      RequestRouter::Create(options, TinyTokenizer(), nullptr);
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE((*router)->WaitUntilReady(kTimeout));
  absl::SleepFor(absl::Milliseconds(200));  // several polls of both replicas
  std::vector<Submitted> requests;
  for (int index = 0; index < 6; ++index)
    requests.push_back(Submit(**router, Request(index, 8, 4)));
  for (Submitted& request : requests) {
    const absl::StatusOr<GenerationOutcome> outcome = request.sink->Wait();
    EXPECT_TRUE(outcome.ok()) << outcome.status();
  }
  const std::vector<ReplicaStatus> replicas = (*router)->Replicas();
  EXPECT_FALSE(replicas.at(0).in_rotation);
  EXPECT_TRUE(replicas.at(1).in_rotation);
  absl::StatusOr<ReplicaLoadReport> other_load = GetLoad(other.address());
  ASSERT_TRUE(other_load.ok()) << other_load.status();
  EXPECT_EQ(other_load->model, "not-tiny");
}

TEST(RequestRouterTest, CreateRefusesBadOptions) {
  RequestRouterOptions options;
  EXPECT_TRUE(
      absl::IsInvalidArgument(RequestRouter::Create(options, TinyTokenizer(), nullptr).status()));
  for (const std::string bad :
       {"localhost", "localhost:", ":80", "host:0", "host:70000", "host:port", "::1:80"}) {
    options.replica_addresses = {bad};
    EXPECT_TRUE(
        absl::IsInvalidArgument(RequestRouter::Create(options, TinyTokenizer(), nullptr).status()))
        << bad;
  }
  options.replica_addresses = {"[::1]:5000", "127.0.0.1:5001"};
  EXPECT_TRUE(RequestRouter::Create(options, TinyTokenizer(), nullptr).ok());
  options.admission.max_queue_time = absl::ZeroDuration();
  EXPECT_TRUE(
      absl::IsInvalidArgument(RequestRouter::Create(options, TinyTokenizer(), nullptr).status()));
  options.admission.max_queue_time = absl::InfiniteDuration();  // no deadline
  EXPECT_TRUE(RequestRouter::Create(options, TinyTokenizer(), nullptr).ok());
  options.admission.max_queued_tokens = 0;
  EXPECT_TRUE(
      absl::IsInvalidArgument(RequestRouter::Create(options, TinyTokenizer(), nullptr).status()));
}

}  // namespace
}  // namespace reflect
