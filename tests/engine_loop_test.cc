// EngineLoop on the real CPU backend and the tiny test model: concurrent requests from several
// threads give exactly the tokens each gives alone (batch invariance + (seed, position) draws),
// also under KV pressure with swap or recompute preemption; cancellation mid-prefill and
// mid-decode frees every block; a shared system prompt hits the prefix cache, and a finished
// prompt's blocks show in the published prefix-cache summary; deadlines, a full queue, bad input,
// draining and stopping give their statuses.
#include "worker/engine_loop.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "common/block_hash.h"
#include "common/model_config.h"
#include "common/prefix_summary.h"
#include "tests/support/test_paths.h"
#include "worker/cpu/cpu_backend.h"

namespace reflect {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(120);

// Records a request's events; Wait blocks the test thread (never the engine).
class RecordingSink : public GenerationSink {
 public:
  explicit RecordingSink(std::function<void(const GeneratedToken&)> on_token = nullptr)
      : on_token_(std::move(on_token)) {}

  void OnToken(const GeneratedToken& token) override {
    {
      const std::lock_guard lock(mutex_);
      tokens_.push_back(token);
    }
    changed_.notify_all();
    if (on_token_) on_token_(token);
  }
  void OnFinished(const absl::Status& status, const GenerationSummary& summary) override {
    {
      const std::lock_guard lock(mutex_);
      EXPECT_FALSE(status_.has_value()) << "OnFinished twice";
      status_ = status;
      summary_ = summary;
    }
    changed_.notify_all();
  }

  // The final status, once it came (UNKNOWN "timed out" otherwise).
  absl::Status Wait() {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, absl::ToChronoNanoseconds(kTimeout),
                           [this] { return status_.has_value(); })) {
      return absl::UnknownError("timed out");
    }
    return *status_;
  }
  bool WaitForTokens(size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, absl::ToChronoNanoseconds(kTimeout), [&] {
      return tokens_.size() >= count || status_.has_value();
    }) && tokens_.size() >= count;
  }
  std::vector<GeneratedToken> tokens() const {
    const std::lock_guard lock(mutex_);
    return tokens_;
  }
  std::vector<int32_t> token_ids() const {
    std::vector<int32_t> ids;
    for (const GeneratedToken& token : tokens()) ids.push_back(token.token_id);
    return ids;
  }
  GenerationSummary summary() const {
    const std::lock_guard lock(mutex_);
    return summary_;
  }

 private:
  std::function<void(const GeneratedToken&)> on_token_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<GeneratedToken> tokens_;
  std::optional<absl::Status> status_;
  GenerationSummary summary_;
};

struct EngineSetup {
  int64_t num_kv_blocks = 256;
  int64_t num_host_blocks = 0;
  SchedulerConfig scheduler;
  int64_t prefix_summary_bytes = 64 * 1024;
};

std::unique_ptr<EngineLoop> MakeEngine(EngineSetup setup = {}) {
  CpuBackendOptions backend_options;
  backend_options.num_kv_blocks = setup.num_kv_blocks;
  backend_options.num_host_blocks = setup.num_host_blocks;
  backend_options.num_threads = 2;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateCpuBackend(testing::TestModelPath("tiny"), backend_options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<ModelDirectoryConfig> config = LoadModelConfig(testing::TestModelPath("tiny"));
  EXPECT_TRUE(config.ok()) << config.status();
  EngineLoopOptions options;
  options.scheduler = setup.scheduler;
  options.scheduler.max_model_length = 4096;
  options.num_host_blocks = static_cast<int32_t>(setup.num_host_blocks);
  options.eos_token_ids = config->model.eos_token_ids;
  options.prefix_summary_bytes = setup.prefix_summary_bytes;
  absl::StatusOr<std::unique_ptr<EngineLoop>> engine =
      EngineLoop::Create(std::move(*backend), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(*engine);
}

std::vector<int32_t> Tokens(int64_t count, int32_t first) {
  std::vector<int32_t> tokens(count);
  for (int64_t index = 0; index < count; ++index) {
    tokens[index] = static_cast<int32_t>((first + index * 7919) % 120000);
  }
  return tokens;
}

EngineRequest Request(std::vector<int32_t> prompt, int64_t max_tokens, double temperature = 0.0,
                      uint64_t seed = 0) {
  EngineRequest request;
  request.prompt_token_ids = std::move(prompt);
  request.sampling.max_tokens = max_tokens;
  request.sampling.temperature = temperature;
  request.sampling.top_p = 0.9;
  request.sampling.seed = seed;
  request.sampling.ignore_eos = true;
  return request;
}

// Polls `done` until true or the timeout.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + kTimeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return done();
}

// A mix of prompt lengths, greedy and seeded sampling, and lengths.
std::vector<EngineRequest> MixedRequests(int count) {
  std::vector<EngineRequest> requests;
  for (int index = 0; index < count; ++index) {
    requests.push_back(Request(Tokens(5 + 13 * index % 70, 1000 + 31 * index), 6 + index % 9,
                               index % 2 == 0 ? 0.0 : 0.9, 100 + index));
    requests.back().sampling.repetition_penalty = index % 3 == 0 ? 1.2 : 1.0;
  }
  return requests;
}

// Each request run alone, one after the other, on a fresh engine.
std::vector<std::vector<GeneratedToken>> RunAlone(const std::vector<EngineRequest>& requests) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  std::vector<std::vector<GeneratedToken>> outputs;
  for (const EngineRequest& request : requests) {
    auto sink = std::make_shared<RecordingSink>();
    EXPECT_TRUE(engine->Submit(request, sink).ok());
    EXPECT_TRUE(sink->Wait().ok());
    outputs.push_back(sink->tokens());
  }
  return outputs;
}

void ExpectSameTokens(const std::vector<GeneratedToken>& actual,
                      const std::vector<GeneratedToken>& expected, size_t request) {
  ASSERT_EQ(actual.size(), expected.size()) << "request " << request;
  for (size_t index = 0; index < actual.size(); ++index) {
    EXPECT_EQ(actual[index].index, static_cast<int64_t>(index));
    EXPECT_EQ(actual[index].token_id, expected[index].token_id)
        << "request " << request << " token " << index;
    EXPECT_EQ(actual[index].logprob, expected[index].logprob)
        << "request " << request << " token " << index;
  }
}

// Submits every request from `num_threads` threads at once; returns each request's tokens.
std::vector<std::vector<GeneratedToken>> RunConcurrently(EngineLoop& engine,
                                                         const std::vector<EngineRequest>& requests,
                                                         int num_threads) {
  std::vector<std::shared_ptr<RecordingSink>> sinks(requests.size());
  std::vector<std::thread> threads;
  for (int thread = 0; thread < num_threads; ++thread) {
    threads.emplace_back([&, thread] {
      for (size_t index = thread; index < requests.size(); index += num_threads) {
        sinks[index] = std::make_shared<RecordingSink>();
        EXPECT_TRUE(engine.Submit(requests[index], sinks[index]).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::vector<std::vector<GeneratedToken>> outputs;
  for (size_t index = 0; index < requests.size(); ++index) {
    EXPECT_TRUE(sinks[index]->Wait().ok()) << "request " << index;
    EXPECT_EQ(sinks[index]->summary().reason, StopReason::kLength);
    outputs.push_back(sinks[index]->tokens());
  }
  return outputs;
}

TEST(EngineLoopTest, ConcurrentRequestsGiveTheTokensOfAloneRuns) {
  const std::vector<EngineRequest> requests = MixedRequests(16);
  const std::vector<std::vector<GeneratedToken>> alone = RunAlone(requests);
  SchedulerConfig scheduler;
  scheduler.max_num_batched_tokens = 64;  // prompts are chunked beside decodes
  std::unique_ptr<EngineLoop> engine = MakeEngine({.scheduler = scheduler});
  const std::vector<std::vector<GeneratedToken>> together = RunConcurrently(*engine, requests, 4);
  for (size_t index = 0; index < requests.size(); ++index) {
    ExpectSameTokens(together[index], alone[index], index);
  }
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
  EXPECT_GT(engine->Load().steps, 0);
}

class KvPressureTest : public ::testing::TestWithParam<PreemptionPolicy> {};

TEST_P(KvPressureTest, PreemptedRequestsStillGiveTheTokensOfAloneRuns) {
  std::vector<EngineRequest> requests;
  for (int index = 0; index < 6; ++index) {
    requests.push_back(Request(Tokens(40 + 9 * index, 5000 + index), 40, 0.8, index));
  }
  const std::vector<std::vector<GeneratedToken>> alone = RunAlone(requests);
  SchedulerConfig scheduler;
  scheduler.preemption = GetParam();
  // 14 blocks of 16 tokens: every request fits alone (≤ 8 blocks), not all together.
  std::unique_ptr<EngineLoop> engine =
      MakeEngine({.num_kv_blocks = 14, .num_host_blocks = 32, .scheduler = scheduler});
  const std::vector<std::vector<GeneratedToken>> together = RunConcurrently(*engine, requests, 3);
  for (size_t index = 0; index < requests.size(); ++index) {
    ExpectSameTokens(together[index], alone[index], index);
  }
  const EngineLoad load = engine->Load();
  EXPECT_GT(load.preemptions_by_swap + load.preemptions_by_recompute, 0);
  if (std::holds_alternative<SwapPreemption>(GetParam())) {
    EXPECT_GT(load.preemptions_by_swap, 0);
  }
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

INSTANTIATE_TEST_SUITE_P(Policies, KvPressureTest,
                         ::testing::Values(PreemptionPolicy{SwapPreemption{.min_tokens = 0}},
                                           PreemptionPolicy{RecomputePreemption{}}));

TEST(EngineLoopTest, CancelMidPrefillFreesEveryBlock) {
  SchedulerConfig scheduler;
  scheduler.max_num_batched_tokens = 16;  // a 900-token prompt takes ~57 steps
  std::unique_ptr<EngineLoop> engine = MakeEngine({.scheduler = scheduler});
  auto sink = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> id = engine->Submit(Request(Tokens(900, 7), 4), sink);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used >= 4; }));
  engine->Cancel(*id);
  EXPECT_EQ(sink->Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(sink->tokens().empty());
  EXPECT_TRUE(Eventually([&] {
    const EngineLoad load = engine->Load();
    return load.kv_blocks_used == 0 && load.running_requests == 0;
  }));
}

TEST(EngineLoopTest, CancelMidDecodeFreesEveryBlock) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  int64_t sequence_id = 0;
  std::mutex id_mutex;
  // Cancels from inside the sink, on the engine thread, as the gRPC layer may.
  auto sink = std::make_shared<RecordingSink>([&](const GeneratedToken& token) {
    if (token.index != 3) return;
    const std::lock_guard lock(id_mutex);
    engine->Cancel(sequence_id);
  });
  {
    const std::lock_guard lock(id_mutex);
    absl::StatusOr<int64_t> id = engine->Submit(Request(Tokens(50, 3), 3000), sink);
    ASSERT_TRUE(id.ok());
    sequence_id = *id;
  }
  EXPECT_EQ(sink->Wait().code(), absl::StatusCode::kCancelled);
  // Cancelled before the next step's token (the step in flight may have added one).
  EXPECT_LE(sink->tokens().size(), 5u);
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

TEST(EngineLoopTest, SharedSystemPromptHitsThePrefixCache) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  const std::vector<int32_t> system_prompt = Tokens(80, 42);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int index = 0; index < 3; ++index) {
    std::vector<int32_t> prompt = system_prompt;
    const std::vector<int32_t> question = Tokens(10 + index, 9000 + 100 * index);
    prompt.insert(prompt.end(), question.begin(), question.end());
    sinks.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(engine->Submit(Request(prompt, 4), sinks.back()).ok());
    ASSERT_TRUE(sinks.back()->Wait().ok());
  }
  EXPECT_EQ(sinks[0]->summary().cached_prompt_tokens, 0);
  EXPECT_EQ(sinks[1]->summary().cached_prompt_tokens, 80);
  EXPECT_EQ(sinks[2]->summary().cached_prompt_tokens, 80);
  EXPECT_GE(engine->Load().prefix_cache_hit_tokens, 160);
}

std::vector<uint64_t> BlockHashes(const std::vector<int32_t>& tokens) {
  BlockHashChain chain(16);  // the CPU backend's default block size
  chain.Extend(tokens);
  return {chain.hashes().begin(), chain.hashes().end()};
}

TEST(EngineLoopTest, PrefixCacheSummaryHoldsAFinishedPromptsBlocks) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  const std::shared_ptr<const PrefixSummary> initial = engine->PrefixCacheSummary();
  ASSERT_NE(initial, nullptr);
  EXPECT_EQ(initial->block_size_tokens, 16);
  EXPECT_EQ(initial->probe_count, 7);
  EXPECT_TRUE(initial->bits.empty()) << "nothing cached yet";

  const std::vector<int32_t> prompt = Tokens(64, 42);
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(Request(prompt, 4), sink).ok());
  ASSERT_TRUE(sink->Wait().ok());
  const std::vector<uint64_t> hashes = BlockHashes(prompt);
  ASSERT_EQ(hashes.size(), 4u);
  // Rebuilt within the interval (100 ms) after the prefill step; allow 1 s.
  std::shared_ptr<const PrefixSummary> summary = engine->PrefixCacheSummary();
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  while (CountCachedLeadingBlocks(*summary, hashes) < 4 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    summary = engine->PrefixCacheSummary();
  }
  EXPECT_EQ(CountCachedLeadingBlocks(*summary, hashes), 4);
  EXPECT_EQ(summary->bits.size(), 64u * 1024u);
  // 64 prompt + 3 computed generated tokens: the four prompt blocks are the only full ones.
  EXPECT_EQ(summary->inserted_blocks, 4);
  const std::vector<uint64_t> other = BlockHashes(Tokens(32, 7));
  EXPECT_FALSE(MayContainBlockHash(*summary, other[0]));
  EXPECT_EQ(CountCachedLeadingBlocks(*summary, other), 0);

  // Unchanged cache, no rebuild: readers keep getting the same immutable filter.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(engine->PrefixCacheSummary(), summary);
}

TEST(EngineLoopTest, NoPrefixCacheSummaryWhenItsSizeIsZero) {
  EngineSetup setup;
  setup.prefix_summary_bytes = 0;
  std::unique_ptr<EngineLoop> engine = MakeEngine(setup);
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(Request(Tokens(40, 3), 2), sink).ok());
  ASSERT_TRUE(sink->Wait().ok());
  EXPECT_EQ(engine->PrefixCacheSummary(), nullptr);
}

TEST(EngineLoopTest, DeadlinesGiveDeadlineExceeded) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  EngineRequest expired = Request(Tokens(20, 1), 10);
  expired.deadline = absl::Now() - absl::Seconds(1);
  auto expired_sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(expired, expired_sink).ok());
  EXPECT_EQ(expired_sink->Wait().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(expired_sink->tokens().empty());

  EngineRequest running = Request(Tokens(20, 2), 3000);
  running.deadline = absl::Now() + absl::Milliseconds(200);
  auto running_sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(running, running_sink).ok());
  EXPECT_EQ(running_sink->Wait().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

TEST(EngineLoopTest, FullQueueIsRefusedAtOnce) {
  SchedulerConfig scheduler;
  scheduler.max_num_seqs = 1;
  scheduler.max_waiting_requests = 2;
  std::unique_ptr<EngineLoop> engine = MakeEngine({.scheduler = scheduler});
  auto running = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> running_id = engine->Submit(Request(Tokens(10, 1), 3000), running);
  ASSERT_TRUE(running_id.ok());
  ASSERT_TRUE(running->WaitForTokens(1));  // admitted: it holds the only sequence slot
  std::vector<int64_t> ids = {*running_id};
  std::vector<std::shared_ptr<RecordingSink>> waiting;
  for (int index = 0; index < 2; ++index) {
    waiting.push_back(std::make_shared<RecordingSink>());
    // Long, so that none can finish between the cancels below.
    absl::StatusOr<int64_t> id =
        engine->Submit(Request(Tokens(10, 2 + index), 3000), waiting.back());
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  absl::StatusOr<int64_t> refused =
      engine->Submit(Request(Tokens(10, 9), 5), std::make_shared<RecordingSink>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(engine->Load().requests_rejected_queue_full, 1);
  for (const int64_t id : ids) engine->Cancel(id);
  EXPECT_EQ(running->Wait().code(), absl::StatusCode::kCancelled);
  for (auto& sink : waiting) EXPECT_EQ(sink->Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

// The token bound counts what a waiting request will cost, prompt + max_tokens: short prompts
// asking for long traces fill the queue as surely as long prompts do.
TEST(EngineLoopTest, QueueIsBoundedByPromptPlusMaxTokens) {
  SchedulerConfig scheduler;
  scheduler.max_num_seqs = 1;
  scheduler.max_waiting_tokens = 5000;
  std::unique_ptr<EngineLoop> engine = MakeEngine({.scheduler = scheduler});
  auto running = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> running_id = engine->Submit(Request(Tokens(10, 1), 3000), running);
  ASSERT_TRUE(running_id.ok());
  ASSERT_TRUE(running->WaitForTokens(1));  // admitted: it holds the only sequence slot
  auto waiting = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> waiting_id = engine->Submit(Request(Tokens(10, 2), 3000), waiting);
  ASSERT_TRUE(waiting_id.ok()) << waiting_id.status();  // 10 + 3000 of 5000
  absl::StatusOr<int64_t> refused =
      engine->Submit(Request(Tokens(10, 3), 2000), std::make_shared<RecordingSink>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);  // 3010 + 2010
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("prompt + max_tokens"));
  auto fits = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> fits_id = engine->Submit(Request(Tokens(10, 4), 380), fits);
  EXPECT_TRUE(fits_id.ok()) << fits_id.status();        // 610 + 390
  // Routing still sees prompt tokens only.
  EXPECT_TRUE(Eventually([&] { return engine->Load().waiting_prompt_tokens == 20; }));
  for (const int64_t id : {*running_id, *waiting_id, *fits_id}) engine->Cancel(id);
  EXPECT_EQ(running->Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

TEST(EngineLoopTest, BadRequestsAreInvalidArgumentAtOnce) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_EQ(engine->Submit(Request({}, 5), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Request({1, static_cast<int32_t>(engine->vocab_size())}, 5), sink)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EngineRequest used_up = Request({1, 2}, 2);
  used_up.generated_token_ids = {3, 4};
  EXPECT_EQ(engine->Submit(used_up, sink).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Request(Tokens(4096, 1), 5), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EngineLoopTest, FailoverContinuesFromGeneratedTokens) {
  const EngineRequest whole = Request(Tokens(30, 77), 12, 0.9, 5);
  const std::vector<GeneratedToken> expected = RunAlone({whole})[0];
  ASSERT_EQ(expected.size(), 12u);
  EngineRequest continued = whole;
  for (int index = 0; index < 5; ++index) {
    continued.generated_token_ids.push_back(expected[index].token_id);
  }
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(continued, sink).ok());
  ASSERT_TRUE(sink->Wait().ok());
  const std::vector<GeneratedToken> tokens = sink->tokens();
  ASSERT_EQ(tokens.size(), 7u);
  for (size_t index = 0; index < tokens.size(); ++index) {
    EXPECT_EQ(tokens[index].index, static_cast<int64_t>(index + 5));
    EXPECT_EQ(tokens[index].token_id, expected[index + 5].token_id);
  }
}

// The tokens a client ends with: an event at index i replaces whatever it had from i on.
std::vector<int32_t> FinalTokens(const std::vector<GeneratedToken>& events) {
  std::vector<int32_t> tokens;
  for (const GeneratedToken& event : events) {
    tokens.resize(event.index);
    tokens.push_back(event.token_id);
  }
  return tokens;
}

TEST(EngineLoopTest, ForceReplacesTheTailAndSamplingContinuesAfterIt) {
  const std::vector<int32_t> forced = {4000, 4001};
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  int64_t handle = 0;
  std::mutex handle_mutex;
  bool forced_once = false;  // engine thread only
  auto sink = std::make_shared<RecordingSink>([&](const GeneratedToken& token) {
    if (token.index != 5 || forced_once) return;
    forced_once = true;
    const std::lock_guard lock(handle_mutex);
    engine->Force(handle, 3, forced);
  });
  EngineRequest request = Request(Tokens(30, 11), 20, 0.9, 3);
  request.sampling.logprobs = 2;
  {
    const std::lock_guard lock(handle_mutex);
    absl::StatusOr<int64_t> submitted = engine->Submit(request, sink);
    ASSERT_TRUE(submitted.ok());
    handle = *submitted;
  }
  ASSERT_TRUE(sink->Wait().ok());
  const std::vector<GeneratedToken> events = sink->tokens();
  ASSERT_GE(events.size(), 8u);
  EXPECT_EQ(events[6].index, 3);  // the forced tokens come right after index 5
  EXPECT_EQ(events[6].token_id, forced[0]);
  EXPECT_EQ(events[7].logprob, 0.0f);
  // Sampled tokens carry alternatives; forced ones carry none.
  EXPECT_FALSE(events[0].top_logprobs.empty());
  EXPECT_LE(events[0].top_logprobs.size(), 2u);
  EXPECT_TRUE(events[6].top_logprobs.empty());
  EXPECT_TRUE(events[7].top_logprobs.empty());
  std::vector<int32_t> tokens = FinalTokens(events);
  ASSERT_EQ(tokens.size(), 20u);

  // Equals a failover run that starts from the kept and forced tokens.
  EngineRequest continued = request;
  continued.generated_token_ids.assign(tokens.begin(), tokens.begin() + 3);
  continued.generated_token_ids.insert(continued.generated_token_ids.end(), forced.begin(),
                                       forced.end());
  std::vector<int32_t> expected = FinalTokens(RunAlone({continued})[0]);
  std::copy(continued.generated_token_ids.begin(), continued.generated_token_ids.end(),
            expected.begin());
  EXPECT_EQ(expected, tokens);

  EngineRequest bad = request;
  auto bad_sink = std::make_shared<RecordingSink>();
  absl::StatusOr<int64_t> bad_handle = engine->Submit(bad, bad_sink);
  ASSERT_TRUE(bad_handle.ok());
  engine->Force(*bad_handle, 1000, forced);
  EXPECT_EQ(bad_sink->Wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Eventually([&] { return engine->Load().kv_blocks_used == 0; }));
}

TEST(EngineLoopTest, DrainFinishesInFlightWorkAndRefusesNew) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int index = 0; index < 3; ++index) {
    sinks.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(engine->Submit(Request(Tokens(20, index), 40), sinks.back()).ok());
  }
  ASSERT_TRUE(sinks[0]->WaitForTokens(1));
  engine->BeginDrain();
  EXPECT_FALSE(engine->Load().accepting);
  absl::StatusOr<int64_t> refused =
      engine->Submit(Request(Tokens(5, 1), 5), std::make_shared<RecordingSink>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("draining"), std::string_view::npos);
  // Infinite, as reflect-worker waits (a hang here is ctest's timeout).
  EXPECT_TRUE(engine->WaitUntilDrained(absl::InfiniteDuration()));
  for (auto& sink : sinks) {
    EXPECT_TRUE(sink->Wait().ok());
    EXPECT_EQ(sink->tokens().size(), 40u);
  }
  EXPECT_EQ(engine->Load().kv_blocks_used, 0);
}

TEST(EngineLoopTest, StopEndsEveryRequestWithUnavailable) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(Request(Tokens(20, 1), 3000), sink).ok());
  ASSERT_TRUE(sink->WaitForTokens(1));
  engine->Stop();
  EXPECT_EQ(sink->Wait().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine->Submit(Request(Tokens(5, 1), 5), sink).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->WaitUntilDrained(absl::ZeroDuration()));
}

TEST(EngineLoopTest, IdleLoopKeepsItsLivenessTimestampFresh) {
  std::unique_ptr<EngineLoop> engine = MakeEngine();
  const absl::Time first = engine->Load().last_progress;
  EXPECT_TRUE(Eventually([&] { return engine->Load().last_progress > first; }));
}

}  // namespace
}  // namespace reflect
