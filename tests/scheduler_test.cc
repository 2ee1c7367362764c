// Scheduler contract tests beyond the golden tables: validation, plan contents, cancellation
// while a step is in flight or while swapped, and ApplyStepResult's checks.
#include "scheduler/scheduler.h"

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace reflect {
namespace {

SequenceRequest Request(int64_t id, int32_t prompt_tokens, int64_t max_tokens) {
  SequenceRequest request;
  request.id = id;
  for (int32_t index = 0; index < prompt_tokens; ++index) {
    request.prompt_token_ids.push_back(static_cast<int32_t>(id * 1000 + index));
  }
  request.max_tokens = max_tokens;
  request.stop_token_ids = {2};
  return request;
}

std::unique_ptr<Scheduler> Make(const SchedulerConfig& config, int32_t device_blocks,
                                int32_t host_blocks = 0) {
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(config, BlockManagerConfig{.block_size = 4,
                                                   .num_device_blocks = device_blocks,
                                                   .num_host_blocks = host_blocks,
                                                   .enable_prefix_caching = true});
  EXPECT_TRUE(scheduler.ok()) << scheduler.status();
  return std::move(*scheduler);
}

// One sampled token for every entry that needs logits.
StepResult Sample(const SchedulerOutput& output, int32_t token_id = 7) {
  StepResult result;
  for (const ScheduledSequence& entry : output.plan.sequences) {
    if (entry.needs_logits) {
      result.tokens.push_back(SampledToken{.sequence_id = entry.sequence_id, .token_id = token_id});
    }
  }
  return result;
}

TEST(SchedulerTest, CreateRejectsUnworkableConfigs) {
  const BlockManagerConfig kv{.block_size = 4, .num_device_blocks = 8};
  SchedulerConfig config;
  config.max_num_seqs = 0;
  EXPECT_EQ(Scheduler::Create(config, kv).status().code(), absl::StatusCode::kInvalidArgument);
  config = SchedulerConfig();
  config.enable_chunked_prefill = false;
  config.max_num_batched_tokens = 100;
  config.max_model_length = 200;
  EXPECT_EQ(Scheduler::Create(config, kv).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      Scheduler::Create(SchedulerConfig(), BlockManagerConfig{.block_size = 0}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, AddRequestValidates) {
  SchedulerConfig config;
  config.max_model_length = 10;
  std::unique_ptr<Scheduler> scheduler = Make(config, 8);
  EXPECT_TRUE(scheduler->AddRequest(Request(1, 4, 2)).ok());
  EXPECT_EQ(scheduler->AddRequest(Request(1, 4, 2)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(scheduler->AddRequest(Request(2, 0, 2)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler->AddRequest(Request(3, 4, 0)).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status too_long = scheduler->AddRequest(Request(4, 10, 2));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("maximum model length"), absl::string_view::npos);
  EXPECT_EQ(scheduler->num_waiting_requests(), 1);
  EXPECT_EQ(scheduler->num_waiting_tokens(), 4);
}

TEST(SchedulerTest, PlanCarriesPositionsBlockTablesAndLogitFlags) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 6;
  std::unique_ptr<Scheduler> scheduler = Make(config, 8);
  ASSERT_TRUE(scheduler->AddRequest(Request(1, 10, 3)).ok());
  const SchedulerOutput& first = scheduler->Schedule(absl::UnixEpoch());
  ASSERT_EQ(first.plan.sequences.size(), 1u);
  const ScheduledSequence& chunk = first.plan.sequences[0];
  EXPECT_EQ(chunk.start_position, 0);
  EXPECT_EQ(chunk.token_ids, (std::vector<int32_t>{1000, 1001, 1002, 1003, 1004, 1005}));
  EXPECT_EQ(chunk.block_table, (std::vector<int32_t>{0, 1}));
  EXPECT_FALSE(chunk.needs_logits);
  EXPECT_EQ(first.num_batched_tokens, 6);
  std::vector<RetiredSequence> finished;
  ASSERT_TRUE(scheduler->ApplyStepResult(StepResult(), finished).ok());
  const SchedulerOutput& second = scheduler->Schedule(absl::UnixEpoch());
  const ScheduledSequence& last = second.plan.sequences[0];
  EXPECT_EQ(last.start_position, 6);
  EXPECT_EQ(last.token_ids.size(), 4u);
  EXPECT_EQ(last.block_table, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_TRUE(last.needs_logits);
  ASSERT_TRUE(scheduler->ApplyStepResult(Sample(second, 9), finished).ok());
  const SchedulerOutput& decode = scheduler->Schedule(absl::UnixEpoch());
  EXPECT_EQ(decode.plan.sequences[0].token_ids, (std::vector<int32_t>{9}));
  EXPECT_EQ(decode.plan.sequences[0].start_position, 10);
  EXPECT_EQ(scheduler->FindSequence(1)->state, SequenceState::kDecoding);
}

TEST(SchedulerTest, ApplyStepResultRejectsWrongTokensAndChangesNothing) {
  std::unique_ptr<Scheduler> scheduler = Make(SchedulerConfig(), 8);
  ASSERT_TRUE(scheduler->AddRequest(Request(1, 4, 3)).ok());
  ASSERT_TRUE(scheduler->AddRequest(Request(2, 4, 3)).ok());
  const SchedulerOutput& output = scheduler->Schedule(absl::UnixEpoch());
  std::vector<RetiredSequence> finished;
  StepResult missing;
  missing.tokens.push_back(SampledToken{.sequence_id = 1, .token_id = 5});
  EXPECT_EQ(scheduler->ApplyStepResult(missing, finished).code(),
            absl::StatusCode::kInvalidArgument);
  StepResult duplicate = missing;
  duplicate.tokens.push_back(SampledToken{.sequence_id = 1, .token_id = 5});
  EXPECT_EQ(scheduler->ApplyStepResult(duplicate, finished).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler->FindSequence(1)->num_computed_tokens, 0);
  ASSERT_TRUE(scheduler->ApplyStepResult(Sample(output), finished).ok());
  EXPECT_EQ(scheduler->FindSequence(1)->num_tokens(), 5);
  EXPECT_EQ(scheduler->ApplyStepResult(StepResult(), finished).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SchedulerTest, CancelWhileTheStepRunsDropsItsToken) {
  std::unique_ptr<Scheduler> scheduler = Make(SchedulerConfig(), 8);
  ASSERT_TRUE(scheduler->AddRequest(Request(1, 4, 3)).ok());
  const SchedulerOutput& output = scheduler->Schedule(absl::UnixEpoch());
  const StepResult result = Sample(output);
  ASSERT_TRUE(scheduler->Cancel(1).ok());
  EXPECT_EQ(scheduler->block_manager().num_used_blocks(), 0);
  std::vector<RetiredSequence> finished;
  EXPECT_TRUE(scheduler->ApplyStepResult(result, finished).ok());
  EXPECT_TRUE(finished.empty());
  EXPECT_EQ(scheduler->Cancel(1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler->block_manager().CheckConsistency().ok());
}

TEST(SchedulerTest, CancelWhileSwappedFreesHostBlocks) {
  SchedulerConfig config;
  config.preemption = SwapPreemption{.min_tokens = 0};
  std::unique_ptr<Scheduler> scheduler = Make(config, 4, 4);
  ASSERT_TRUE(scheduler->AddRequest(Request(1, 8, 10)).ok());
  ASSERT_TRUE(scheduler->AddRequest(Request(2, 8, 10)).ok());
  std::vector<RetiredSequence> finished;
  bool swapped = false;
  for (int step = 0; step < 4 && !swapped; ++step) {
    const SchedulerOutput& output = scheduler->Schedule(absl::UnixEpoch());
    swapped = !output.plan.swap_out.empty();
    if (swapped) {
      EXPECT_EQ(output.preempted.size(), 1u);
      EXPECT_EQ(output.preempted[0].sequence_id, 2);
      EXPECT_EQ(output.preempted[0].mode, PreemptionMode::kSwap);
      EXPECT_EQ(output.plan.swap_out.size(), 2u);
    }
    ASSERT_TRUE(scheduler->ApplyStepResult(Sample(output), finished).ok());
  }
  ASSERT_TRUE(swapped);
  const Sequence* victim = scheduler->FindSequence(2);
  EXPECT_EQ(victim->state, SequenceState::kSwapped) << SequenceStateName(victim->state);
  EXPECT_EQ(victim->num_preemptions, 1);
  EXPECT_EQ(scheduler->block_manager().num_free_host_blocks(), 2);
  ASSERT_TRUE(scheduler->Cancel(2).ok());
  EXPECT_EQ(scheduler->block_manager().num_free_host_blocks(), 4);
  EXPECT_EQ(scheduler->counters().preemptions_by_swap, 1);
  EXPECT_TRUE(scheduler->block_manager().CheckConsistency().ok());
}

}  // namespace
}  // namespace reflect
