// The CPU backend's host swap pool (StepPlan.swap_out / swap_in): a sequence swapped out, its
// device blocks overwritten by another sequence, and swapped back into different blocks
// continues with bit-identical logits; the documented order swap_out → block_copies → swap_in
// holds inside one step; swap plans without swap space, or with ids out of range, are refused.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <vector>

#include "tests/support/test_paths.h"
#include "worker/cpu/cpu_backend.h"

namespace reflect {
namespace {

constexpr int64_t kBlockSize = 16;

std::unique_ptr<Backend> MakeBackend(int64_t num_host_blocks) {
  CpuBackendOptions options;
  options.num_kv_blocks = 16;
  options.block_size = kBlockSize;
  options.num_threads = 2;
  options.num_host_blocks = num_host_blocks;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateCpuBackend(testing::TestModelPath("tiny"), options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(*backend) : nullptr;
}

std::vector<int32_t> Tokens(int64_t count, int32_t first) {
  std::vector<int32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

ScheduledSequence Entry(int64_t id, std::vector<int32_t> tokens, int64_t start_position,
                        std::vector<int32_t> block_table) {
  ScheduledSequence sequence;
  sequence.sequence_id = id;
  sequence.token_ids = std::move(tokens);
  sequence.start_position = start_position;
  sequence.block_table = std::move(block_table);
  return sequence;
}

// The logits after running `prompt` whole on a fresh backend: the reference every swapped
// continuation must equal bit for bit (the backend is batch- and chunking-invariant).
std::vector<float> ReferenceLogits(const std::vector<int32_t>& prompt) {
  std::unique_ptr<Backend> backend = MakeBackend(0);
  StepPlan plan;
  plan.sequences.push_back(Entry(1, prompt, 0, {0, 1, 2, 3}));
  std::vector<float> logits;
  EXPECT_TRUE(backend->Forward(plan, logits).ok());
  return logits;
}

TEST(CpuBackendSwapTest, SwapOutClobberSwapInGivesIdenticalLogits) {
  const std::vector<int32_t> prompt = Tokens(41, 100);
  std::unique_ptr<Backend> backend = MakeBackend(8);
  std::vector<float> logits;

  // 40 tokens into device blocks 0, 1, 2.
  StepPlan prefill;
  prefill.sequences.push_back(
      Entry(1, std::vector<int32_t>(prompt.begin(), prompt.begin() + 40), 0, {0, 1, 2}));
  ASSERT_TRUE(backend->Forward(prefill, logits).ok());

  // Swap out to host blocks 5, 6, 7 while another sequence overwrites blocks 0, 1, 2.
  StepPlan clobber;
  clobber.swap_out = {{0, 5}, {1, 6}, {2, 7}};
  clobber.sequences.push_back(Entry(2, Tokens(48, 900), 0, {0, 1, 2}));
  ASSERT_TRUE(backend->Forward(clobber, logits).ok());

  // Swap into other device blocks and decode token 40.
  StepPlan resume;
  resume.swap_in = {{9, 5}, {4, 6}, {11, 7}};
  resume.sequences.push_back(Entry(1, {prompt[40]}, 40, {9, 4, 11}));
  ASSERT_TRUE(backend->Forward(resume, logits).ok());

  EXPECT_EQ(logits, ReferenceLogits(prompt));
}

TEST(CpuBackendSwapTest, SwapOutReadsBeforeBlockCopiesWriteAndSwapInWritesAfter) {
  const std::vector<int32_t> prompt = Tokens(33, 200);
  std::unique_ptr<Backend> backend = MakeBackend(4);
  std::vector<float> logits;

  StepPlan prefill;
  prefill.sequences.push_back(
      Entry(1, std::vector<int32_t>(prompt.begin(), prompt.begin() + 32), 0, {0, 1}));
  prefill.sequences.push_back(Entry(2, Tokens(32, 700), 0, {2, 3}));
  ASSERT_TRUE(backend->Forward(prefill, logits).ok());

  // One step: block 0 goes to the host first, then a copy overwrites it with sequence 2's block,
  // then the host block comes back into block 5 (written after the copies, so 5 is not clobbered
  // by copying into it).
  StepPlan step;
  step.swap_out = {{0, 1}, {1, 2}};
  step.block_copies = {{2, 0}, {3, 5}};
  step.swap_in = {{5, 1}, {6, 2}};
  ASSERT_TRUE(backend->Forward(step, logits).ok());

  StepPlan decode;
  decode.sequences.push_back(Entry(1, {prompt[32]}, 32, {5, 6, 7}));
  ASSERT_TRUE(backend->Forward(decode, logits).ok());
  EXPECT_EQ(logits, ReferenceLogits(prompt));
}

TEST(CpuBackendSwapTest, SwapPlansOutOfRangeAreInvalidArgument) {
  std::unique_ptr<Backend> without_host = MakeBackend(0);
  std::vector<float> logits;
  StepPlan plan;
  plan.swap_out = {{0, 0}};
  EXPECT_EQ(without_host->Forward(plan, logits).code(), absl::StatusCode::kInvalidArgument);

  std::unique_ptr<Backend> with_host = MakeBackend(2);
  plan.swap_out = {{0, 2}};
  EXPECT_EQ(with_host->Forward(plan, logits).code(), absl::StatusCode::kInvalidArgument);
  plan.swap_out.clear();
  plan.swap_in = {{16, 0}};
  EXPECT_EQ(with_host->Forward(plan, logits).code(), absl::StatusCode::kInvalidArgument);
  plan.swap_in = {{-1, 1}};
  EXPECT_EQ(with_host->Forward(plan, logits).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuBackendSwapTest, NegativeHostBlocksAreRejected) {
  CpuBackendOptions options;
  options.num_host_blocks = -1;
  EXPECT_EQ(CreateCpuBackend(testing::TestModelPath("tiny"), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace reflect
