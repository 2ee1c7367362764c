#include "worker/generator.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflect {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

// A stand-in model that keeps the generator honest about KV bookkeeping: Forward writes each
// token into the slot its block table and position name, and the logits of a sequence are a
// hash of the whole context read back from those slots. A wrong block table, a block shared by
// two live sequences or a wrong position changes the logits, and so the generated tokens.
class FakeBackend : public Backend {
 public:
  FakeBackend(int64_t vocab_size, int64_t num_kv_blocks, int64_t block_size)
      : vocab_size_(vocab_size),
        num_kv_blocks_(num_kv_blocks),
        block_size_(block_size),
        slots_(static_cast<size_t>(num_kv_blocks * block_size), -1) {}

  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override {
    ++num_steps_;
    logits.clear();
    for (const ScheduledSequence& sequence : plan.sequences) {
      max_tokens_in_a_step_ =
          std::max<int64_t>(max_tokens_in_a_step_, static_cast<int64_t>(sequence.token_ids.size()));
      const int64_t end = sequence.start_position + static_cast<int64_t>(sequence.token_ids.size());
      if (static_cast<int64_t>(sequence.block_table.size()) * block_size_ < end) {
        return absl::InvalidArgumentError("block table too short");
      }
      for (size_t offset = 0; offset < sequence.token_ids.size(); ++offset) {
        const int64_t position = sequence.start_position + static_cast<int64_t>(offset);
        REFLECT_ASSIGN_OR_RETURN(const size_t slot, Slot(sequence, position));
        slots_[slot] = sequence.token_ids[offset];
      }
      if (!sequence.needs_logits) continue;
      uint64_t hash = 0x243F6A8885A308D3ULL;
      for (int64_t position = 0; position < end; ++position) {
        REFLECT_ASSIGN_OR_RETURN(const size_t slot, Slot(sequence, position));
        hash = Mix(hash ^ static_cast<uint64_t>(slots_[slot] + 1));
      }
      for (int64_t token = 0; token < vocab_size_; ++token) {
        const uint64_t bits = Mix(hash + static_cast<uint64_t>(token));
        logits.push_back(static_cast<float>(bits >> 40) / static_cast<float>(1 << 24) * 6.0f);
      }
    }
    return absl::OkStatus();
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int64_t num_kv_blocks() const override { return num_kv_blocks_; }
  int64_t block_size() const override { return block_size_; }

  int64_t num_steps() const { return num_steps_; }
  int64_t max_tokens_in_a_step() const { return max_tokens_in_a_step_; }

 private:
  static uint64_t Mix(uint64_t value) {
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
    value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
    return value ^ (value >> 31);
  }

  absl::StatusOr<size_t> Slot(const ScheduledSequence& sequence, int64_t position) const {
    const int32_t block = sequence.block_table[static_cast<size_t>(position / block_size_)];
    if (block < 0 || block >= num_kv_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat("block ", block, " is outside the pool"));
    }
    return static_cast<size_t>(block * block_size_ + position % block_size_);
  }

  int64_t vocab_size_;
  int64_t num_kv_blocks_;
  int64_t block_size_;
  std::vector<int32_t> slots_;
  int64_t num_steps_ = 0;
  int64_t max_tokens_in_a_step_ = 0;
};

GenerationRequest Request(std::vector<int32_t> prompt, int64_t max_tokens, double temperature,
                          uint64_t seed = 0) {
  GenerationRequest request;
  request.prompt_ids = std::move(prompt);
  request.params.max_tokens = max_tokens;
  request.params.temperature = temperature;
  request.params.top_p = temperature > 0 ? 0.9 : 1.0;
  request.params.seed = seed;
  return request;
}

std::vector<GenerationRequest> MixedRequests(double temperature) {
  std::vector<GenerationRequest> requests;
  for (int index = 0; index < 6; ++index) {
    std::vector<int32_t> prompt;
    for (int token = 0; token < 3 + 7 * index; ++token) prompt.push_back((token * 13 + index) % 50);
    requests.push_back(Request(prompt, 5 + 3 * index, temperature, /*seed=*/100 + index));
  }
  return requests;
}

std::vector<std::vector<int32_t>> GeneratedIds(const std::vector<GenerationResult>& results) {
  std::vector<std::vector<int32_t>> ids;
  for (const GenerationResult& result : results) ids.push_back(result.generated_ids);
  return ids;
}

std::vector<GenerationResult> GenerateAll(const std::vector<GenerationRequest>& requests,
                                          const GeneratorOptions& options = {},
                                          int64_t num_kv_blocks = 256) {
  FakeBackend backend(/*vocab_size=*/64, num_kv_blocks, /*block_size=*/4);
  Generator generator(backend, options);
  absl::StatusOr<std::vector<GenerationResult>> results = generator.Generate(requests);
  EXPECT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(generator.block_allocator().num_free(), generator.block_allocator().num_blocks());
  return results.ok() ? *std::move(results) : std::vector<GenerationResult>{};
}

TEST(GeneratorTest, RequestGivesTheSameTokensAloneAndBatched) {
  for (const double temperature : {0.0, 1.0}) {
    const std::vector<GenerationRequest> requests = MixedRequests(temperature);
    const std::vector<GenerationResult> batched = GenerateAll(requests);
    ASSERT_THAT(batched, SizeIs(requests.size()));
    for (size_t index = 0; index < requests.size(); ++index) {
      const std::vector<GenerationResult> alone = GenerateAll({requests[index]});
      ASSERT_THAT(alone, SizeIs(1));
      EXPECT_EQ(alone[0].generated_ids, batched[index].generated_ids)
          << "request " << index << " temperature " << temperature;
      EXPECT_EQ(alone[0].logprobs, batched[index].logprobs);
    }
  }
}

TEST(GeneratorTest, SeedChangesSampledTokens) {
  const std::vector<int32_t> prompt = {1, 2, 3};
  const auto first = GenerateAll({Request(prompt, 20, 1.0, 1), Request(prompt, 20, 1.0, 2)});
  ASSERT_THAT(first, SizeIs(2));
  EXPECT_NE(first[0].generated_ids, first[1].generated_ids);
}

TEST(GeneratorTest, ChunkedPrefillAndSmallBatchesGiveTheSameTokens) {
  const std::vector<GenerationRequest> requests = MixedRequests(1.0);
  const std::vector<std::vector<int32_t>> reference = GeneratedIds(GenerateAll(requests));
  for (const int64_t budget : {1, 2, 3, 7, 16}) {
    for (const int64_t max_num_seqs : {1, 2, 64}) {
      GeneratorOptions options;
      options.max_num_batched_tokens = budget;
      options.max_num_seqs = max_num_seqs;
      FakeBackend backend(64, 256, 4);
      Generator generator(backend, options);
      absl::StatusOr<std::vector<GenerationResult>> results = generator.Generate(requests);
      ASSERT_TRUE(results.ok()) << results.status();
      EXPECT_EQ(GeneratedIds(*results), reference)
          << "budget " << budget << " max_num_seqs " << max_num_seqs;
      EXPECT_LE(backend.max_tokens_in_a_step(), budget);
      EXPECT_EQ(generator.block_allocator().num_free(), 256);
    }
  }
}

TEST(GeneratorTest, SmallPoolAdmitsRequestsAsBlocksFreeUp) {
  const std::vector<GenerationRequest> requests = MixedRequests(0.0);
  const std::vector<std::vector<int32_t>> reference = GeneratedIds(GenerateAll(requests));
  // The largest request needs ceil((38 + 20 - 1) / 4) = 15 blocks; 16 run them one or two at once.
  EXPECT_EQ(GeneratedIds(GenerateAll(requests, {}, /*num_kv_blocks=*/16)), reference);
}

TEST(GeneratorTest, MaxTokensEndsWithLength) {
  const auto results = GenerateAll({Request({5, 6, 7}, 9, 0.0), Request({8}, 1, 1.0)});
  ASSERT_THAT(results, SizeIs(2));
  EXPECT_THAT(results[0].generated_ids, SizeIs(9));
  EXPECT_THAT(results[1].generated_ids, SizeIs(1));
  for (const GenerationResult& result : results) {
    EXPECT_EQ(result.finish_reason, FinishReason::kLength);
    EXPECT_THAT(result.logprobs, SizeIs(result.generated_ids.size()));
    EXPECT_GE(result.total_seconds, result.time_to_first_token_seconds);
    EXPECT_GT(result.time_to_first_token_seconds, 0.0);
  }
}

TEST(GeneratorTest, GreedyAlternativesStartWithTheChosenToken) {
  GenerationRequest request = Request({5, 6, 7}, 6, 0.0);
  request.params.logprobs = 3;
  GenerationRequest sampled = Request({8, 9}, 6, 1.0, /*seed=*/4);
  sampled.params.logprobs = 2;
  const GenerationRequest without = Request({5, 6, 7}, 6, 0.0);
  const auto results = GenerateAll({request, sampled, without});
  ASSERT_THAT(results, SizeIs(3));
  for (size_t index = 0; index < 2; ++index) {
    const GenerationResult& result = results[index];
    ASSERT_THAT(result.top_logprobs, SizeIs(result.generated_ids.size()));
    for (size_t token = 0; token < result.generated_ids.size(); ++token) {
      const std::vector<TokenAlternative>& top = result.top_logprobs[token];
      ASSERT_THAT(top, SizeIs(index == 0 ? 3 : 2)) << "token " << token;
      for (size_t rank = 1; rank < top.size(); ++rank) {
        EXPECT_GE(top[rank - 1].logprob, top[rank].logprob);
      }
      if (index == 0) {
        EXPECT_EQ(top[0].token_id, result.generated_ids[token]);
        EXPECT_EQ(top[0].logprob, result.logprobs[token]);
      }
    }
  }
  // Alternatives change nothing else, and cost nothing when not asked for.
  EXPECT_EQ(results[2].generated_ids, results[0].generated_ids);
  EXPECT_EQ(results[2].logprobs, results[0].logprobs);
  EXPECT_TRUE(results[2].top_logprobs.empty());
}

TEST(GeneratorTest, EosStopsUnlessIgnored) {
  GenerationRequest request = Request({4, 9, 4, 9}, 12, 0.0);
  const std::vector<int32_t> free_running = GenerateAll({request})[0].generated_ids;
  ASSERT_THAT(free_running, SizeIs(12));
  const int32_t eos = free_running[3];
  size_t first_eos = 0;
  while (free_running[first_eos] != eos) ++first_eos;

  request.eos_token_ids = {eos};
  const GenerationResult stopped = GenerateAll({request})[0];
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.generated_ids,
            std::vector<int32_t>(free_running.begin(), free_running.begin() + first_eos + 1));

  request.params.ignore_eos = true;
  const GenerationResult ignored = GenerateAll({request})[0];
  EXPECT_EQ(ignored.finish_reason, FinishReason::kLength);
  EXPECT_EQ(ignored.generated_ids, free_running);

  // stop_token_ids stop even with ignore_eos.
  request.params.stop_token_ids = {eos};
  EXPECT_EQ(GenerateAll({request})[0].generated_ids, stopped.generated_ids);
}

TEST(GeneratorTest, ContextLengthCapsGeneration) {
  GeneratorOptions options;
  options.max_model_length = 7;
  const auto results = GenerateAll({Request({1, 2, 3, 4}, 50, 0.0)}, options);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_THAT(results[0].generated_ids, SizeIs(3));
  EXPECT_EQ(results[0].finish_reason, FinishReason::kLength);
}

TEST(GeneratorTest, CallbackSeesEveryTokenInOrder) {
  const std::vector<GenerationRequest> requests = MixedRequests(1.0);
  FakeBackend backend(64, 256, 4);
  Generator generator(backend, {});
  std::vector<std::vector<int32_t>> streamed(requests.size());
  absl::StatusOr<std::vector<GenerationResult>> results = generator.Generate(
      requests, [&](size_t index, int32_t token) { streamed[index].push_back(token); });
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(streamed, GeneratedIds(*results));
}

TEST(GeneratorTest, RejectsRequestsThatCanNeverRun) {
  FakeBackend backend(64, /*num_kv_blocks=*/4, /*block_size=*/4);
  GeneratorOptions options;
  options.max_model_length = 100;
  Generator generator(backend, options);
  // 10 + 10 - 1 = 19 cached positions need 5 blocks of 4; the pool has 4.
  auto too_long = generator.Generate({Request(std::vector<int32_t>(10, 1), 10, 0.0)});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_long.status().message(), ::testing::HasSubstr("pool"));

  EXPECT_EQ(generator.Generate({Request({1, 64}, 2, 0.0)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.Generate({Request({}, 2, 0.0)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.Generate({Request({1}, 0, 0.0)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.Generate({Request(std::vector<int32_t>(100, 1), 1, 0.0)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(generator.block_allocator().num_free(), 4);
  // A request that fits exactly still runs.
  auto exact = generator.Generate({Request(std::vector<int32_t>(9, 1), 8, 0.0)});
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_THAT((*exact)[0].generated_ids, SizeIs(8));
}

// ---- PlanStep, the pure policy. ----

PlanningSequence Running(int64_t num_tokens, int64_t num_computed_tokens) {
  return {.running = true,
          .num_tokens = num_tokens,
          .num_computed_tokens = num_computed_tokens,
          .num_blocks_reserved = 2};
}

PlanningSequence Waiting(int64_t num_tokens, int64_t num_blocks_reserved) {
  return {.num_tokens = num_tokens, .num_blocks_reserved = num_blocks_reserved};
}

MATCHER_P4(Chunk, index, count, admit, needs_logits, "") {
  return arg.sequence_index == static_cast<size_t>(index) && arg.num_new_tokens == count &&
         arg.admit == admit && arg.needs_logits == needs_logits;
}

TEST(PlanStepTest, DecodesFirstThenPrefillChunksThenAdmissions) {
  const std::vector<PlanningSequence> sequences = {
      Running(20, 4),  // prefilling: 16 left
      Running(9, 8),   // decoding
      Waiting(30, 3),  // admitted with what budget is left
  };
  GeneratorOptions options;
  options.max_num_batched_tokens = 20;
  EXPECT_THAT(
      PlanStep(sequences, /*num_free_blocks=*/10, options),
      ElementsAre(Chunk(1, 1, false, true), Chunk(0, 16, false, true), Chunk(2, 3, true, false)));
}

TEST(PlanStepTest, AdmissionStopsAtTheFirstRequestThatDoesNotFit) {
  const std::vector<PlanningSequence> sequences = {Waiting(4, 3), Waiting(4, 5), Waiting(4, 1)};
  EXPECT_THAT(PlanStep(sequences, /*num_free_blocks=*/6, {}), ElementsAre(Chunk(0, 4, true, true)));
}

TEST(PlanStepTest, RespectsTheSequenceCapAndSkipsFinished) {
  std::vector<PlanningSequence> sequences = {Running(9, 8), Waiting(4, 1), Waiting(4, 1)};
  sequences[1].finished = true;
  GeneratorOptions options;
  options.max_num_seqs = 2;
  EXPECT_THAT(PlanStep(sequences, 10, options),
              ElementsAre(Chunk(0, 1, false, true), Chunk(2, 4, true, true)));
  options.max_num_seqs = 1;
  EXPECT_THAT(PlanStep(sequences, 10, options), ElementsAre(Chunk(0, 1, false, true)));
}

}  // namespace
}  // namespace reflect
