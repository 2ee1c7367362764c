// The router's replica choice as tables: each case lists the ready replicas' loads and which
// prompt blocks their prefix-cache summaries hold, and the replica the choice must pick.
#include "router/replica_choice.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/block_hash.h"
#include "common/prefix_summary.h"

namespace reflect {
namespace {

constexpr int32_t kBlockSize = 16;

// A prompt of `blocks` full blocks plus a partial one.
std::vector<int32_t> Prompt(int blocks, int32_t salt = 0) {
  std::vector<int32_t> prompt;
  for (int position = 0; position < blocks * kBlockSize + 5; ++position) {
    prompt.push_back(1000 + salt * 7 + position * 13);
  }
  return prompt;
}

// A summary holding the first `cached_blocks` full blocks of `prompt`.
std::shared_ptr<const PrefixSummary> Holding(const std::vector<int32_t>& prompt, int cached_blocks,
                                             int32_t block_size = kBlockSize) {
  PrefixSummary summary = MakePrefixSummary(block_size, 4096, 7);
  BlockHashChain chain(block_size);
  chain.Extend(prompt);
  for (int block = 0; block < cached_blocks; ++block)
    InsertBlockHash(chain.hashes()[block], summary);
  return std::make_shared<const PrefixSummary>(std::move(summary));
}

struct Replica {
  int64_t outstanding = 0;
  int64_t running = 0;
  int64_t waiting = 0;
  int cached_blocks = -1;              // -1: no summary
  int64_t outstanding_at_report = -1;  // -1: same as outstanding (a fresh report)
  int64_t waiting_prompt_tokens = 0;
  double kv_usage = 0.0;
};

struct ChoiceCase {
  std::string name;
  std::vector<Replica> replicas;
  size_t expected;
};

std::vector<ReplicaCandidate> Candidates(const std::vector<Replica>& replicas,
                                         const std::vector<int32_t>& prompt) {
  std::vector<ReplicaCandidate> candidates;
  for (const Replica& replica : replicas) {
    candidates.push_back(ReplicaCandidate{
        .outstanding_requests = replica.outstanding,
        .outstanding_requests_at_report =
            replica.outstanding_at_report < 0 ? replica.outstanding : replica.outstanding_at_report,
        .reported_running = replica.running,
        .reported_waiting = replica.waiting,
        .reported_waiting_prompt_tokens = replica.waiting_prompt_tokens,
        .kv_cache_usage_ratio = replica.kv_usage,
        .prefix_summary =
            replica.cached_blocks < 0 ? nullptr : Holding(prompt, replica.cached_blocks)});
  }
  return candidates;
}

TEST(ReplicaChoiceTest, Table) {
  // Default options: a near-tie is within max(2 requests, 25% of the least).
  const std::vector<ChoiceCase> cases = {
      {"one replica", {{.outstanding = 9}}, 0},
      {"least outstanding", {{.outstanding = 5}, {.outstanding = 1}, {.outstanding = 3}}, 1},
      {"full tie: first", {{.outstanding = 1}, {.outstanding = 1}}, 0},
      {"reported work counts", {{.outstanding = 0, .running = 9}, {.outstanding = 1}}, 1},
      {"reported waiting counts", {{.running = 1, .waiting = 8}, {.running = 4}}, 1},
      {"own count moved since report",
       {{.outstanding = 6, .running = 1, .outstanding_at_report = 1}, {.running = 4}},
       1},
      {"own count is a floor", {{.outstanding = 5, .outstanding_at_report = 9}, {.running = 4}}, 1},
      {"prefix wins a near-tie",
       {{.outstanding = 1, .cached_blocks = 0}, {.outstanding = 3, .cached_blocks = 4}},
       1},
      {"longest prefix wins",
       {{.outstanding = 2, .cached_blocks = 2},
        {.outstanding = 2, .cached_blocks = 5},
        {.outstanding = 1, .cached_blocks = 3}},
       1},
      {"prefix never beats the margin",
       {{.outstanding = 1, .cached_blocks = 0}, {.outstanding = 4, .cached_blocks = 6}},
       0},
      {"margin grows with load",
       {{.outstanding = 20, .cached_blocks = 0}, {.outstanding = 25, .cached_blocks = 6}},
       1},
      {"fractional margin bounded",
       {{.outstanding = 20, .cached_blocks = 0}, {.outstanding = 26, .cached_blocks = 6}},
       0},
      {"equal prefixes: less work",
       {{.outstanding = 2, .cached_blocks = 3}, {.outstanding = 1, .cached_blocks = 3}},
       1},
      {"no summaries: less work", {{.outstanding = 2}, {.outstanding = 1}}, 1},
      {"summary vs none", {{.outstanding = 1}, {.outstanding = 2, .cached_blocks = 1}}, 1},
      {"empty summary is nothing",
       {{.outstanding = 1, .cached_blocks = 0}, {.outstanding = 2, .cached_blocks = 0}},
       0},
      {"then fewer waiting prompt tokens",
       {{.waiting_prompt_tokens = 900}, {.waiting_prompt_tokens = 100}},
       1},
      {"then lower KV usage", {{.kv_usage = 0.9}, {.kv_usage = 0.2}}, 1},
  };
  const std::vector<int32_t> prompt = Prompt(6);
  for (const ChoiceCase& test : cases) {
    const std::vector<ReplicaCandidate> candidates = Candidates(test.replicas, prompt);
    const std::optional<ReplicaChoice> choice = ChooseReplica(candidates, prompt);
    ASSERT_TRUE(choice.has_value()) << test.name;
    EXPECT_EQ(choice->index, test.expected) << test.name;
  }
}

TEST(ReplicaChoiceTest, NoCandidates) { EXPECT_FALSE(ChooseReplica({}, Prompt(1)).has_value()); }

TEST(ReplicaChoiceTest, ReportsCachedPromptTokens) {
  const std::vector<int32_t> prompt = Prompt(6);
  const std::vector<ReplicaCandidate> candidates =
      Candidates({{.cached_blocks = 2}, {.cached_blocks = 4}}, prompt);
  const std::optional<ReplicaChoice> choice = ChooseReplica(candidates, prompt);
  ASSERT_TRUE(choice.has_value());
  EXPECT_EQ(choice->index, 1u);
  EXPECT_EQ(choice->cached_prompt_tokens, 4 * kBlockSize);
}

TEST(ReplicaChoiceTest, OnlyLeadingBlocksCount) {
  // Replica 0 holds blocks 1..5 but not block 0: chained hashes make that useless, so the
  // replica holding just block 0 wins.
  const std::vector<int32_t> prompt = Prompt(6);
  PrefixSummary tail = MakePrefixSummary(kBlockSize, 4096, 7);
  BlockHashChain chain(kBlockSize);
  chain.Extend(prompt);
  for (int block = 1; block < 6; ++block) InsertBlockHash(chain.hashes()[block], tail);
  std::vector<ReplicaCandidate> candidates = Candidates({{}, {.cached_blocks = 1}}, prompt);
  candidates[0].prefix_summary = std::make_shared<const PrefixSummary>(std::move(tail));
  const std::optional<ReplicaChoice> choice = ChooseReplica(candidates, prompt);
  ASSERT_TRUE(choice.has_value());
  EXPECT_EQ(choice->index, 1u);
}

TEST(ReplicaChoiceTest, DifferentPromptMissesTheCache) {
  const std::vector<int32_t> cached_prompt = Prompt(6, /*salt=*/1);
  const std::vector<int32_t> other_prompt = Prompt(6, /*salt=*/2);
  std::vector<ReplicaCandidate> candidates =
      Candidates({{.outstanding = 0}, {.outstanding = 1}}, cached_prompt);
  candidates[1].prefix_summary = Holding(cached_prompt, 6);
  EXPECT_EQ(ChooseReplica(candidates, cached_prompt)->index, 1u);
  EXPECT_EQ(ChooseReplica(candidates, other_prompt)->index, 0u);
}

TEST(ReplicaChoiceTest, BlockSizesCompareInTokens) {
  // 3 blocks of 32 tokens (96) beat 5 blocks of 16 (80).
  const std::vector<int32_t> prompt = Prompt(8);
  std::vector<ReplicaCandidate> candidates = Candidates({{}, {}}, prompt);
  candidates[0].prefix_summary = Holding(prompt, 5, 16);
  candidates[1].prefix_summary = Holding(prompt, 3, 32);
  const std::optional<ReplicaChoice> choice = ChooseReplica(candidates, prompt);
  ASSERT_TRUE(choice.has_value());
  EXPECT_EQ(choice->index, 1u);
  EXPECT_EQ(choice->cached_prompt_tokens, 96);
}

TEST(ReplicaChoiceTest, MarginOptions) {
  const std::vector<int32_t> prompt = Prompt(4);
  const std::vector<ReplicaCandidate> candidates = Candidates(
      {{.outstanding = 1, .cached_blocks = 0}, {.outstanding = 2, .cached_blocks = 4}}, prompt);
  EXPECT_EQ(ChooseReplica(candidates, prompt)->index, 1u);
  const ReplicaChoiceOptions strict{.load_margin_requests = 0, .load_margin_fraction = 0.0};
  EXPECT_EQ(ChooseReplica(candidates, prompt, strict)->index, 0u);
}

TEST(ReplicaChoiceTest, EstimatedOutstandingRequests) {
  ReplicaCandidate candidate;
  candidate.outstanding_requests = 3;
  candidate.outstanding_requests_at_report = 1;
  candidate.reported_running = 4;
  candidate.reported_waiting = 2;
  // The report plus the 2 requests this router sent since.
  EXPECT_EQ(EstimatedOutstandingRequests(candidate), 8);
  // The report predates 6 of this router's requests ending: never below the router's own count.
  candidate.outstanding_requests_at_report = 9;
  EXPECT_EQ(EstimatedOutstandingRequests(candidate), 3);
}

}  // namespace
}  // namespace reflect
