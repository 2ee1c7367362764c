// Scheduler planning cost (DESIGN §4 target: one Schedule with 256 running sequences ≤ 50 µs).
// Only Schedule is timed (manual time); the simulated backend's ApplyStepResult and the
// periodic rebuilds that keep sequences from growing without bound run outside the timer.
//   BM_Schedule256Decodes    256 decoding sequences with 512-token prompts.
//   BM_ScheduleMixed         256 sequences in steady state: finished ones are replaced by new
//                            1024-token requests sharing a 256-token system prompt, so steps
//                            mix decodes with chunked prefills, admissions and prefix hits.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "scheduler/scheduler.h"

namespace reflect {
namespace {

constexpr int32_t kSequences = 256;

std::unique_ptr<Scheduler> MakeScheduler(int64_t token_budget, int32_t device_blocks) {
  SchedulerConfig config;
  config.max_num_batched_tokens = token_budget;
  config.max_num_seqs = kSequences;
  config.max_waiting_requests = 4 * kSequences;
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler = Scheduler::Create(
      config, BlockManagerConfig{.block_size = 16, .num_device_blocks = device_blocks});
  if (!scheduler.ok()) {
    std::fprintf(stderr, "%s\n", scheduler.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*scheduler);
}

SequenceRequest MakeRequest(int64_t id, int32_t shared_tokens, int32_t prompt_tokens,
                            int64_t max_tokens) {
  SequenceRequest request;
  request.id = id;
  for (int32_t index = 0; index < prompt_tokens; ++index) {
    request.prompt_token_ids.push_back(
        index < shared_tokens ? 100 + index : static_cast<int32_t>((id * 7919 + index) % 120000));
  }
  request.max_tokens = max_tokens;
  request.stop_token_ids = {2};
  request.arrival_time = absl::UnixEpoch() + absl::Milliseconds(id);
  return request;
}

StepResult Sample(const SchedulerOutput& output) {
  StepResult result;
  for (const ScheduledSequence& entry : output.plan.sequences) {
    if (entry.needs_logits) {
      result.tokens.push_back(SampledToken{.sequence_id = entry.sequence_id, .token_id = 1000});
    }
  }
  return result;
}

double TimedScheduleSeconds(Scheduler& scheduler, absl::Time now, const SchedulerOutput** out) {
  const auto start = std::chrono::steady_clock::now();
  const SchedulerOutput& output = scheduler.Schedule(now);
  const auto stop = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(output.num_batched_tokens);
  *out = &output;
  return std::chrono::duration<double>(stop - start).count();
}

void ApplyOrDie(Scheduler& scheduler, const SchedulerOutput& output,
                std::vector<RetiredSequence>& finished) {
  finished.clear();
  const absl::Status applied = scheduler.ApplyStepResult(Sample(output), finished);
  if (!applied.ok()) {
    std::fprintf(stderr, "%s\n", applied.ToString().c_str());
    std::exit(1);
  }
}

// 256 sequences, all past their prefill.
std::unique_ptr<Scheduler> DecodingBatch() {
  std::unique_ptr<Scheduler> scheduler = MakeScheduler(8192, 32768);
  for (int64_t id = 0; id < kSequences; ++id) {
    if (!scheduler->AddRequest(MakeRequest(id, 0, 512, 1 << 20)).ok()) std::exit(1);
  }
  std::vector<RetiredSequence> finished;
  for (int step = 0; step < 20; ++step) {
    ApplyOrDie(*scheduler, scheduler->Schedule(absl::UnixEpoch()), finished);
  }
  return scheduler;
}

void BM_Schedule256Decodes(benchmark::State& state) {
  std::unique_ptr<Scheduler> scheduler = DecodingBatch();
  std::vector<RetiredSequence> finished;
  int steps_since_rebuild = 0;
  int64_t scheduled = 0;
  for (auto _ : state) {
    if (++steps_since_rebuild == 1024) {
      scheduler = DecodingBatch();
      steps_since_rebuild = 0;
    }
    const SchedulerOutput* output = nullptr;
    state.SetIterationTime(TimedScheduleSeconds(*scheduler, absl::UnixEpoch(), &output));
    scheduled += std::ssize(output->plan.sequences);
    ApplyOrDie(*scheduler, *output, finished);
  }
  state.counters["sequences_per_step"] =
      benchmark::Counter(static_cast<double>(scheduled), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_Schedule256Decodes)->UseManualTime()->Unit(benchmark::kMicrosecond);

void BM_ScheduleMixed(benchmark::State& state) {
  std::unique_ptr<Scheduler> scheduler = MakeScheduler(2048, 40000);
  int64_t next_id = 0;
  const auto add = [&] {
    const int64_t id = next_id++;
    const int64_t max_tokens = 64 + (id * 37) % 960;
    if (!scheduler->AddRequest(MakeRequest(id, 256, 1024, max_tokens)).ok()) std::exit(1);
  };
  for (int32_t index = 0; index < kSequences; ++index) add();
  std::vector<RetiredSequence> finished;
  int64_t step = 0;
  int64_t scheduled = 0;
  int64_t tokens = 0;
  for (auto _ : state) {
    const SchedulerOutput* output = nullptr;
    const absl::Time now = absl::UnixEpoch() + absl::Milliseconds(step++);
    state.SetIterationTime(TimedScheduleSeconds(*scheduler, now, &output));
    scheduled += std::ssize(output->plan.sequences);
    tokens += output->num_batched_tokens;
    ApplyOrDie(*scheduler, *output, finished);
    for (size_t index = 0; index < finished.size(); ++index) add();
  }
  state.counters["sequences_per_step"] =
      benchmark::Counter(static_cast<double>(scheduled), benchmark::Counter::kAvgIterations);
  state.counters["tokens_per_step"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kAvgIterations);
  const BlockManagerCounters& counters = scheduler->block_manager().counters();
  state.counters["prefix_hit_ratio"] =
      static_cast<double>(counters.prefix_cache_hit_tokens) /
      static_cast<double>(std::max<int64_t>(1, counters.prefix_cache_queried_tokens));
}
BENCHMARK(BM_ScheduleMixed)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace reflect
