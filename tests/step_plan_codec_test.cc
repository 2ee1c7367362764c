// The step plan codec: random plans round-trip exactly (extreme values included), every
// truncation and random corruption of an encoding is INVALID_ARGUMENT or decodes to some plan
// without crashing, and a 256-sequence decode plan stays small.
#include "worker/parallel/step_plan_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>

namespace reflect {

// Field-wise equality, in namespace reflect so std::vector's == finds it.
bool operator==(const BlockCopy& a, const BlockCopy& b) {
  return a.source_block == b.source_block && a.destination_block == b.destination_block;
}
bool operator==(const BlockSwap& a, const BlockSwap& b) {
  return a.device_block == b.device_block && a.host_block == b.host_block;
}
bool operator==(const ScheduledSequence& a, const ScheduledSequence& b) {
  return a.sequence_id == b.sequence_id && a.token_ids == b.token_ids &&
         a.start_position == b.start_position && a.block_table == b.block_table &&
         a.needs_logits == b.needs_logits;
}

namespace {

void ExpectEqual(const StepPlan& expected, const StepPlan& actual) {
  EXPECT_TRUE(expected.block_copies == actual.block_copies);
  EXPECT_TRUE(expected.swap_out == actual.swap_out);
  EXPECT_TRUE(expected.swap_in == actual.swap_in);
  EXPECT_TRUE(expected.sequences == actual.sequences);
}

// Any int32, biased towards small values and the extremes.
int32_t RandomInt32(std::mt19937& generator) {
  switch (generator() % 4) {
    case 0:
      return static_cast<int32_t>(generator() % 100);
    case 1:
      return std::numeric_limits<int32_t>::min() + static_cast<int32_t>(generator() % 3);
    case 2:
      return std::numeric_limits<int32_t>::max() - static_cast<int32_t>(generator() % 3);
    default:
      return static_cast<int32_t>(generator());
  }
}

int64_t RandomInt64(std::mt19937_64& generator) {
  switch (generator() % 3) {
    case 0:
      return static_cast<int64_t>(generator() % 5000);
    case 1:
      return generator() % 2 == 0 ? std::numeric_limits<int64_t>::min()
                                  : std::numeric_limits<int64_t>::max();
    default:
      return static_cast<int64_t>(generator());
  }
}

StepPlan RandomPlan(uint32_t seed) {
  std::mt19937 generator(seed);
  std::mt19937_64 wide(seed);
  StepPlan plan;
  for (uint32_t index = generator() % 4; index > 0; --index) {
    plan.block_copies.push_back({RandomInt32(generator), RandomInt32(generator)});
  }
  for (uint32_t index = generator() % 3; index > 0; --index) {
    plan.swap_out.push_back({RandomInt32(generator), RandomInt32(generator)});
  }
  for (uint32_t index = generator() % 3; index > 0; --index) {
    plan.swap_in.push_back({RandomInt32(generator), RandomInt32(generator)});
  }
  for (uint32_t index = generator() % 12; index > 0; --index) {
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.sequence_id = RandomInt64(wide);
    sequence.start_position = RandomInt64(wide);
    sequence.needs_logits = generator() % 2 == 0;
    sequence.token_ids.resize(generator() % 20);
    for (int32_t& token : sequence.token_ids) token = RandomInt32(generator);
    sequence.block_table.resize(generator() % 10);
    for (int32_t& block : sequence.block_table) block = RandomInt32(generator);
  }
  return plan;
}

TEST(StepPlanCodecTest, RandomPlansRoundTrip) {
  for (uint32_t seed = 0; seed < 500; ++seed) {
    const StepPlan plan = RandomPlan(seed);
    const absl::StatusOr<StepPlan> decoded = DecodeStepPlan(EncodeStepPlan(plan));
    ASSERT_TRUE(decoded.ok()) << "seed " << seed << ": " << decoded.status();
    ExpectEqual(plan, *decoded);
  }
}

TEST(StepPlanCodecTest, EmptyPlanRoundTrips) {
  const std::string bytes = EncodeStepPlan(StepPlan());
  EXPECT_EQ(bytes.size(), 5u);  // version and four zero counts
  const absl::StatusOr<StepPlan> decoded = DecodeStepPlan(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ExpectEqual(StepPlan(), *decoded);
}

TEST(StepPlanCodecTest, EveryTruncationIsInvalidArgument) {
  for (uint32_t seed = 0; seed < 50; ++seed) {
    const std::string bytes = EncodeStepPlan(RandomPlan(seed));
    for (size_t length = 0; length < bytes.size(); ++length) {
      const absl::StatusOr<StepPlan> decoded = DecodeStepPlan(bytes.substr(0, length));
      ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument)
          << "seed " << seed << ", " << length << " of " << bytes.size() << " bytes";
    }
  }
}

TEST(StepPlanCodecTest, TrailingBytesAndWrongVersionAreRefused) {
  std::string bytes = EncodeStepPlan(RandomPlan(7));
  EXPECT_EQ(DecodeStepPlan(bytes + '\0').status().code(), absl::StatusCode::kInvalidArgument);
  bytes[0] = 0x02;
  EXPECT_EQ(DecodeStepPlan(bytes).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StepPlanCodecTest, HostileVarintsAndCountsAreRefused) {
  // A count of 2^63 sequences, an over-long varint, a token id beyond int32.
  const std::string huge_count =
      std::string("\x01\x00\x00\x00", 4) + "\xff\xff\xff\xff\xff\xff\xff\xff\x7f";
  EXPECT_EQ(DecodeStepPlan(huge_count).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string long_varint =
      std::string("\x01", 1) + "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
  EXPECT_EQ(DecodeStepPlan(long_varint).status().code(), absl::StatusCode::kInvalidArgument);
  // One sequence: id 0, one token with needs_logits, start 0, token zigzag(2^31), no blocks.
  const std::string big_token =
      std::string("\x01\x00\x00\x00\x01\x00\x03\x00", 8) + "\x80\x80\x80\x80\x10" + '\0';
  EXPECT_EQ(DecodeStepPlan(big_token).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StepPlanCodecTest, CorruptedBytesNeverCrash) {
  std::mt19937 generator(1234);
  int refused = 0;
  int decoded = 0;
  for (uint32_t seed = 0; seed < 2000; ++seed) {
    std::string bytes = EncodeStepPlan(RandomPlan(seed % 100));
    for (uint32_t flips = 1 + generator() % 4; flips > 0; --flips) {
      bytes[generator() % bytes.size()] ^= static_cast<char>(1 << (generator() % 8));
    }
    const absl::StatusOr<StepPlan> plan = DecodeStepPlan(bytes);
    if (plan.ok()) {
      ++decoded;
      const absl::StatusOr<StepPlan> again = DecodeStepPlan(EncodeStepPlan(*plan));
      ASSERT_TRUE(again.ok()) << again.status();
      ExpectEqual(*plan, *again);
    } else {
      ++refused;
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);
}

// A decode step of 256 sequences with 100-1100 tokens of context each (block size 16), blocks
// handed out by an allocator that interleaves sequences: the realistic worst case for deltas.
TEST(StepPlanCodecTest, DecodePlanOf256SequencesIsSmall) {
  std::mt19937 generator(42);
  StepPlan plan;
  std::vector<int32_t> free_blocks(40000);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), generator);
  size_t next_block = 0;
  for (int64_t index = 0; index < 256; ++index) {
    ScheduledSequence& sequence = plan.sequences.emplace_back();
    sequence.sequence_id = 1000 + index * 3;
    sequence.start_position = 100 + generator() % 1000;
    sequence.token_ids = {static_cast<int32_t>(generator() % 128256)};
    sequence.block_table.resize(sequence.start_position / 16 + 1);
    for (int32_t& block : sequence.block_table) block = free_blocks[next_block++];
  }
  const std::string shuffled = EncodeStepPlan(plan);
  // The same plan with each table in one run of consecutive blocks (a fresh pool).
  int32_t block = 0;
  for (ScheduledSequence& sequence : plan.sequences) {
    for (int32_t& entry : sequence.block_table) entry = block++;
  }
  const std::string consecutive = EncodeStepPlan(plan);
  std::printf("256-sequence decode plan (%zu blocks): %zu bytes shuffled, %zu consecutive\n",
              next_block, shuffled.size(), consecutive.size());
  // Per sequence about 9 bytes (id, shape, start, token, block count, first block) plus one byte
  // per block of a consecutive table, three per block drawn at random from a 40 000-block pool.
  EXPECT_LT(consecutive.size(), 256 * 10 + next_block);
  EXPECT_LT(shuffled.size(), 256 * 10 + 3 * next_block);
}

}  // namespace
}  // namespace reflect
