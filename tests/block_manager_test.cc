// BlockManager (DESIGN §5): block tables, prefix cache with LRU reuse, copy-on-write, swap
// bookkeeping; unit tests, then thousands of random operations checking the invariants after
// every one.
#include "kvcache/block_manager.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "common/block_hash.h"
#include "gtest/gtest.h"
#include "kvcache/block_allocator.h"

namespace reflect {
namespace {

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> Tokens(int32_t first, int32_t count) {
  std::vector<int32_t> tokens;
  for (int32_t index = 0; index < count; ++index) tokens.push_back(first + index);
  return tokens;
}

std::vector<uint64_t> Hashes(const std::vector<int32_t>& tokens) {
  BlockHashChain chain(kBlockSize);
  chain.Extend(tokens);
  return {chain.hashes().begin(), chain.hashes().end()};
}

std::vector<int32_t> Table(const BlockManager& manager, int64_t sequence_id) {
  const absl::Span<const int32_t> table = manager.BlockTable(sequence_id);
  return {table.begin(), table.end()};
}

BlockManagerConfig Config(int32_t device_blocks, int32_t host_blocks = 0) {
  return BlockManagerConfig{.block_size = kBlockSize,
                            .num_device_blocks = device_blocks,
                            .num_host_blocks = host_blocks,
                            .enable_prefix_caching = true};
}

// Admits the whole sequence in one step and marks it computed, as a finished prefill would.
void AdmitComputed(BlockManager& manager, int64_t id, const std::vector<int32_t>& tokens) {
  const std::vector<uint64_t> hashes = Hashes(tokens);
  const PrefixMatch match = manager.MatchPrefix(hashes, std::ssize(tokens));
  const int64_t new_tokens = std::ssize(tokens) - match.num_cached_tokens;
  ASSERT_TRUE(manager.CanAdmit(match, new_tokens));
  ASSERT_TRUE(manager.Admit(id, hashes, match, new_tokens).ok());
  manager.MarkComputed(id, hashes, std::ssize(tokens));
  ASSERT_TRUE(manager.CheckConsistency().ok()) << manager.CheckConsistency();
}

TEST(BlockHashTest, ChainsOverThePrefix) {
  const std::vector<uint64_t> first = Hashes({1, 2, 3, 4, 5, 6, 7, 8});
  const std::vector<uint64_t> second = Hashes({9, 2, 3, 4, 5, 6, 7, 8});
  ASSERT_EQ(first.size(), 2u);
  EXPECT_NE(first[0], second[0]);
  // Same second block, different prefix: different key.
  EXPECT_NE(first[1], second[1]);
  EXPECT_EQ(Hashes({1, 2, 3, 4, 5, 6, 7, 8, 9}), first);  // a partial block has no hash
}

TEST(BlockAllocatorEvictableTest, FreeBlocksFirstThenLeastRecentlyReleased) {
  BlockAllocator allocator(4);
  const int32_t a = *allocator.Allocate();
  const int32_t b = *allocator.Allocate();
  const int32_t c = *allocator.Allocate();
  allocator.ReleaseToEvictable(b);
  allocator.ReleaseToEvictable(a);
  allocator.ReleaseToEvictable(c);
  EXPECT_EQ(allocator.EvictableInLruOrder(), (std::vector<int32_t>{b, a, c}));
  EXPECT_EQ(allocator.num_available(), 4);
  allocator.ReviveEvictable(a);
  EXPECT_EQ(allocator.ref_count(a), 1);
  EXPECT_EQ(allocator.EvictableInLruOrder(), (std::vector<int32_t>{b, c}));
  EXPECT_EQ(*allocator.Allocate(), 3);  // the never-used block before any eviction
  EXPECT_EQ(*allocator.Allocate(), b);
  EXPECT_EQ(*allocator.Allocate(), c);
  EXPECT_FALSE(allocator.Allocate().ok());
}

TEST(BlockManagerTest, TablesGrowOneBlockPerBlockSizeTokens) {
  BlockManager manager(Config(8));
  const std::vector<int32_t> prompt = Tokens(100, 10);
  const std::vector<uint64_t> hashes = Hashes(prompt);
  const PrefixMatch match = manager.MatchPrefix(hashes, 10);
  EXPECT_EQ(match.num_cached_blocks, 0);
  ASSERT_TRUE(manager.Admit(1, hashes, match, 10).ok());
  EXPECT_EQ(Table(manager, 1), (std::vector<int32_t>{0, 1, 2}));
  std::vector<BlockCopy> copies;
  EXPECT_EQ(manager.NumAppendableTokens(1, 100), 2 + 5 * kBlockSize);
  ASSERT_TRUE(manager.Append(1, hashes, 2, copies).ok());
  EXPECT_EQ(Table(manager, 1).size(), 3u);
  const absl::StatusOr<absl::Span<const int32_t>> grown = manager.Append(1, hashes, 1, copies);
  ASSERT_TRUE(grown.ok());
  EXPECT_EQ(std::vector<int32_t>(grown->begin(), grown->end()), Table(manager, 1));
  EXPECT_EQ(Table(manager, 1).size(), 4u);
  EXPECT_TRUE(copies.empty());
  EXPECT_EQ(manager.num_used_blocks(), 4);
  manager.Free(1);
  EXPECT_EQ(manager.num_used_blocks(), 0);
  EXPECT_EQ(manager.num_free_blocks(), 8);
  EXPECT_TRUE(manager.CheckConsistency().ok());
}

TEST(BlockManagerTest, PrefixHitSharesTheSamePhysicalBlocks) {
  BlockManager manager(Config(16));
  std::vector<int32_t> first = Tokens(1, 10);
  AdmitComputed(manager, 1, first);
  std::vector<int32_t> second = Tokens(1, 8);
  second.push_back(500);
  second.push_back(501);
  const std::vector<uint64_t> hashes = Hashes(second);
  const PrefixMatch match = manager.MatchPrefix(hashes, std::ssize(second));
  EXPECT_EQ(match.num_cached_blocks, 2);
  EXPECT_EQ(match.num_cached_tokens, 8);
  EXPECT_EQ(match.num_evictable_hits, 0);
  ASSERT_TRUE(manager.Admit(2, hashes, match, 2).ok());
  const std::vector<int32_t> table = Table(manager, 2);
  const std::vector<int32_t> first_table = Table(manager, 1);
  EXPECT_EQ(table[0], first_table[0]);
  EXPECT_EQ(table[1], first_table[1]);
  EXPECT_NE(table[2], first_table[2]);
  EXPECT_EQ(manager.device_allocator().ref_count(table[0]), 2);
  EXPECT_EQ(manager.counters().prefix_cache_queried_tokens, 20);
  EXPECT_EQ(manager.counters().prefix_cache_hit_tokens, 8);
  EXPECT_TRUE(manager.CheckConsistency().ok());
}

TEST(BlockManagerTest, AlwaysLeavesTheLastTokenToCompute) {
  BlockManager manager(Config(16));
  AdmitComputed(manager, 1, Tokens(1, 8));
  // Identical 8-token prompt: the second block holds the last token, so only one block hits.
  const PrefixMatch match = manager.MatchPrefix(Hashes(Tokens(1, 8)), 8);
  EXPECT_EQ(match.num_cached_blocks, 1);
}

TEST(BlockManagerTest, FreedCachedBlocksAreRevivedOrEvictedInLruOrder) {
  BlockManager manager(Config(4));
  AdmitComputed(manager, 1, Tokens(1, 9));  // blocks 0 1 cached, block 2 partial
  manager.Free(1);
  EXPECT_EQ(manager.num_cached_blocks(), 2);
  EXPECT_EQ(manager.num_free_blocks(), 2);
  // Freed last to first: the chain's tail (block 1) is the least recently released.
  EXPECT_EQ(manager.device_allocator().EvictableInLruOrder(), (std::vector<int32_t>{1, 0}));
  // A hit revives the evictable blocks.
  const std::vector<int32_t> again = Tokens(1, 9);
  const PrefixMatch match = manager.MatchPrefix(Hashes(again), 9);
  EXPECT_EQ(match.num_cached_blocks, 2);
  EXPECT_EQ(match.num_evictable_hits, 2);
  AdmitComputed(manager, 2, again);
  EXPECT_EQ(Table(manager, 2)[0], 0);
  EXPECT_EQ(Table(manager, 2)[1], 1);
  EXPECT_EQ(manager.num_cached_blocks(), 0);
  manager.Free(2);
  // Unrelated sequences use the free blocks first, then evict block 1 before block 0.
  AdmitComputed(manager, 3, Tokens(50, 8));
  EXPECT_EQ(manager.num_cached_blocks(), 2);
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(manager.Append(3, Hashes(Tokens(50, 12)), 4, copies).ok());
  EXPECT_EQ(Table(manager, 3).back(), 1);
  EXPECT_EQ(manager.counters().evicted_cached_blocks, 1);
  EXPECT_EQ(manager.MatchPrefix(Hashes(Tokens(1, 9)), 9).num_cached_blocks, 1);
  EXPECT_TRUE(manager.CheckConsistency().ok()) << manager.CheckConsistency();
}

TEST(BlockManagerTest, SameStepPrefixWaitsForThePendingBlockInsteadOfComputingIt) {
  BlockManager manager(Config(16));
  const std::vector<int32_t> prompt = Tokens(1, 10);
  const std::vector<uint64_t> hashes = Hashes(prompt);
  ASSERT_TRUE(manager.Admit(1, hashes, manager.MatchPrefix(hashes, 10), 10).ok());
  const PrefixMatch pending = manager.MatchPrefix(hashes, 10);
  EXPECT_TRUE(pending.waits_for_pending);
  EXPECT_EQ(pending.num_cached_blocks, 0);
  manager.MarkComputed(1, hashes, 10);
  const PrefixMatch computed = manager.MatchPrefix(hashes, 10);
  EXPECT_FALSE(computed.waits_for_pending);
  EXPECT_EQ(computed.num_cached_blocks, 2);
}

TEST(BlockManagerTest, FreeingUncomputedBlocksDropsTheirCacheEntries) {
  BlockManager manager(Config(16));
  const std::vector<uint64_t> hashes = Hashes(Tokens(1, 10));
  ASSERT_TRUE(manager.Admit(1, hashes, manager.MatchPrefix(hashes, 10), 10).ok());
  EXPECT_EQ(manager.prefix_cache().num_entries(), 2);
  manager.Free(1);
  EXPECT_EQ(manager.prefix_cache().num_entries(), 0);
  EXPECT_EQ(manager.num_cached_blocks(), 0);
  EXPECT_EQ(manager.num_free_blocks(), 16);
  EXPECT_FALSE(manager.MatchPrefix(hashes, 10).waits_for_pending);
}

// What the replica's PrefixCacheSummary is built from: exactly the computed entries, in use or
// evictable, and a version that moves only when that set does.
TEST(BlockManagerTest, VisitsTheHashesOfComputedBlocksOnly) {
  BlockManager manager(Config(4));
  const auto computed_hashes = [&manager] {
    std::set<uint64_t> hashes;
    manager.prefix_cache().ForEachComputedHash([&hashes](uint64_t hash) { hashes.insert(hash); });
    return hashes;
  };
  const uint64_t initial = manager.prefix_cache().computed_version();
  const std::vector<uint64_t> first = Hashes(Tokens(1, 9));
  ASSERT_TRUE(manager.Admit(1, first, manager.MatchPrefix(first, 9), 9).ok());
  EXPECT_TRUE(computed_hashes().empty()) << "pending blocks are not shareable yet";
  EXPECT_EQ(manager.prefix_cache().computed_version(), initial);
  manager.MarkComputed(1, first, 9);
  EXPECT_EQ(computed_hashes(), (std::set<uint64_t>{first[0], first[1]}));
  EXPECT_EQ(manager.prefix_cache().num_computed(), 2);
  const uint64_t after_compute = manager.prefix_cache().computed_version();
  EXPECT_NE(after_compute, initial);

  manager.Free(1);  // evictable, still cached
  EXPECT_EQ(computed_hashes(), (std::set<uint64_t>{first[0], first[1]}));
  EXPECT_EQ(manager.prefix_cache().computed_version(), after_compute);

  // A sequence that needs every block evicts both cached ones.
  AdmitComputed(manager, 2, Tokens(50, 13));
  const std::vector<uint64_t> second = Hashes(Tokens(50, 13));
  EXPECT_EQ(computed_hashes(), (std::set<uint64_t>(second.begin(), second.end())));
  EXPECT_EQ(manager.prefix_cache().num_computed(), 3);
  EXPECT_NE(manager.prefix_cache().computed_version(), after_compute);
  EXPECT_TRUE(manager.CheckConsistency().ok()) << manager.CheckConsistency();
}

TEST(BlockManagerTest, AppendingIntoASharedPartialBlockCopiesItFirst) {
  BlockManager manager(Config(8));
  AdmitComputed(manager, 1, Tokens(1, 6));  // blocks 0 (full) and 1 (2 of 4 slots)
  ASSERT_TRUE(manager.Fork(1, 2).ok());
  EXPECT_EQ(Table(manager, 2), Table(manager, 1));
  EXPECT_EQ(manager.device_allocator().ref_count(1), 2);
  std::vector<BlockCopy> copies;
  ASSERT_TRUE(manager.Append(2, {}, 1, copies).ok());
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].source_block, 1);
  EXPECT_EQ(copies[0].destination_block, 2);
  EXPECT_EQ(Table(manager, 2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(Table(manager, 1), (std::vector<int32_t>{0, 1}));
  // The parent now holds block 1 alone: it appends in place.
  ASSERT_TRUE(manager.Append(1, {}, 1, copies).ok());
  EXPECT_EQ(copies.size(), 1u);
  EXPECT_EQ(manager.counters().copy_on_write_blocks, 1);
  EXPECT_TRUE(manager.CheckConsistency().ok());
}

TEST(BlockManagerTest, SwapOutAndInReturnTheBlockPairsToCopy) {
  BlockManager manager(Config(4, 2));
  AdmitComputed(manager, 1, Tokens(1, 6));
  AdmitComputed(manager, 2, Tokens(100, 6));
  EXPECT_FALSE(manager.CanSwapOut(3));
  std::vector<BlockSwap> swaps;
  ASSERT_TRUE(manager.CanSwapOut(1));
  ASSERT_TRUE(manager.SwapOut(1, swaps).ok());
  ASSERT_EQ(swaps.size(), 2u);
  EXPECT_EQ(swaps[0].device_block, 0);
  EXPECT_EQ(swaps[0].host_block, 0);
  EXPECT_EQ(swaps[1].device_block, 1);
  EXPECT_EQ(swaps[1].host_block, 1);
  EXPECT_TRUE(manager.IsSwappedOut(1));
  EXPECT_EQ(manager.num_free_host_blocks(), 0);
  EXPECT_FALSE(manager.CanSwapOut(2));  // host pool full
  EXPECT_EQ(manager.NumAppendableTokens(1, 1), 0);
  EXPECT_EQ(manager.num_used_blocks(), 2);
  // Fill the device so that swap-in must wait.
  AdmitComputed(manager, 3, Tokens(200, 8));
  EXPECT_FALSE(manager.CanSwapIn(1, 1));
  manager.Free(3);
  ASSERT_TRUE(manager.CanSwapIn(1, 1));
  swaps.clear();
  ASSERT_TRUE(manager.SwapIn(1, swaps).ok());
  ASSERT_EQ(swaps.size(), 2u);
  EXPECT_EQ(swaps[0].host_block, 0);
  EXPECT_EQ(swaps[1].host_block, 1);
  EXPECT_EQ(Table(manager, 1),
            (std::vector<int32_t>{swaps[0].device_block, swaps[1].device_block}));
  EXPECT_EQ(manager.num_free_host_blocks(), 2);
  EXPECT_EQ(manager.NumSlots(1), 6);
  EXPECT_TRUE(manager.CheckConsistency().ok()) << manager.CheckConsistency();
}

TEST(BlockManagerTest, QueriesNeverMutateAndStalePlansAreRefused) {
  BlockManager manager(Config(4, 4));
  AdmitComputed(manager, 1, Tokens(1, 9));
  const std::vector<uint64_t> hashes = Hashes(Tokens(1, 9));
  const PrefixMatch match = manager.MatchPrefix(hashes, 9);
  for (int repeat = 0; repeat < 3; ++repeat) {
    manager.CanAdmit(match, 100);
    manager.NumAppendableTokens(1, 100);
    manager.CanSwapOut(1);
    manager.CanSwapIn(1, 1);
  }
  EXPECT_EQ(manager.num_used_blocks(), 3);
  EXPECT_EQ(manager.counters().prefix_cache_queried_tokens, 9);
  EXPECT_TRUE(manager.CheckConsistency().ok());
  EXPECT_EQ(manager.Admit(1, hashes, match, 1).code(), absl::StatusCode::kFailedPrecondition);
  manager.Free(1);
  AdmitComputed(manager, 2, Tokens(70, 16));  // evicts the cached chain
  EXPECT_EQ(manager.Admit(3, hashes, match, 1).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<BlockCopy> copies;
  EXPECT_EQ(manager.Append(2, {}, 1, copies).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager.Append(9, {}, 1, copies).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(manager.CheckConsistency().ok());
}

TEST(BlockManagerTest, DisabledPrefixCachingNeverShares) {
  BlockManagerConfig config = Config(8);
  config.enable_prefix_caching = false;
  BlockManager manager(config);
  AdmitComputed(manager, 1, Tokens(1, 9));
  EXPECT_EQ(manager.MatchPrefix(Hashes(Tokens(1, 9)), 9).num_cached_blocks, 0);
  manager.Free(1);
  EXPECT_EQ(manager.num_cached_blocks(), 0);
  EXPECT_EQ(manager.num_free_blocks(), 8);
}

// ---- Random operations ----

struct ModelSequence {
  std::vector<int32_t> tokens;
  int64_t slots = 0;
  bool swapped = false;
};

class RandomOperations {
 public:
  explicit RandomOperations(uint32_t seed) : random_(seed), manager_(Config(24, 12)) {
    // Three shared "system prompts" of different lengths, as most requests carry one.
    for (int32_t prefix = 0; prefix < 3; ++prefix) {
      prefixes_.push_back(Tokens(1000 * (prefix + 1), 3 + 5 * prefix));
    }
  }

  void Run(int operations) {
    for (int operation = 0; operation < operations; ++operation) {
      const std::vector<int32_t> lru_before = manager_.device_allocator().EvictableInLruOrder();
      std::vector<uint64_t> hash_before;
      for (int32_t block = 0; block < manager_.num_device_blocks(); ++block) {
        hash_before.push_back(manager_.prefix_cache().hash(block));
      }
      Step();
      if (testing::Test::HasFatalFailure()) return;
      const absl::Status consistent = manager_.CheckConsistency();
      ASSERT_TRUE(consistent.ok()) << consistent << " after operation " << operation;
      CheckLruOrder(lru_before, hash_before);
      if (testing::Test::HasFatalFailure()) return;
      ASSERT_EQ(
          manager_.num_used_blocks() + manager_.num_cached_blocks() + manager_.num_free_blocks(),
          manager_.num_device_blocks());
    }
    for (const auto& [id, sequence] : live_) manager_.Free(id);
    live_.clear();
    ASSERT_TRUE(manager_.CheckConsistency().ok());
    EXPECT_EQ(manager_.num_used_blocks(), 0) << "leaked blocks";
    EXPECT_EQ(manager_.num_free_host_blocks(), manager_.num_host_blocks());
    // The operations reached every mechanism.
    const BlockManagerCounters& counters = manager_.counters();
    EXPECT_GT(counters.prefix_cache_hit_tokens, 0);
    EXPECT_GT(counters.evicted_cached_blocks, 0);
    EXPECT_GT(counters.copy_on_write_blocks, 0);
    EXPECT_GT(counters.swapped_in_blocks, 0);
  }

 private:
  int64_t Pick(bool swapped) {
    std::vector<int64_t> candidates;
    for (const auto& [id, sequence] : live_) {
      if (sequence.swapped == swapped) candidates.push_back(id);
    }
    if (candidates.empty()) return -1;
    return candidates[random_() % candidates.size()];
  }

  std::vector<uint64_t> HashesOf(const ModelSequence& sequence) { return Hashes(sequence.tokens); }

  void Step() {
    switch (random_() % 7) {
      case 0:
      case 1:
        Admit();
        return;
      case 2:
      case 3:
        Grow();
        return;
      case 4: {
        const int64_t id = Pick(random_() % 4 == 0);
        if (id >= 0) {
          manager_.Free(id);
          live_.erase(id);
        }
        return;
      }
      case 5:
        if (random_() % 2 == 0) {
          Fork();
        } else {
          SwapOut();
        }
        return;
      default:
        SwapIn();
        return;
    }
  }

  void Admit() {
    ModelSequence sequence;
    sequence.tokens = prefixes_[random_() % prefixes_.size()];
    const auto suffix = static_cast<int32_t>(1 + random_() % 9);
    for (int32_t index = 0; index < suffix; ++index) {
      sequence.tokens.push_back(static_cast<int32_t>(random_() % 3));
    }
    const std::vector<uint64_t> hashes = HashesOf(sequence);
    const PrefixMatch match = manager_.MatchPrefix(hashes, std::ssize(sequence.tokens));
    const int64_t remaining = std::ssize(sequence.tokens) - match.num_cached_tokens;
    const int64_t new_tokens = 1 + static_cast<int64_t>(random_() % remaining);
    const int64_t id = next_id_++;
    if (!manager_.CanAdmit(match, new_tokens)) {
      const int32_t used = manager_.num_used_blocks();
      ASSERT_EQ(manager_.Admit(id, hashes, match, new_tokens).code(),
                absl::StatusCode::kResourceExhausted);
      ASSERT_EQ(manager_.num_used_blocks(), used);
      return;
    }
    ASSERT_TRUE(manager_.Admit(id, hashes, match, new_tokens).ok());
    const std::vector<int32_t> table = Table(manager_, id);
    for (int32_t index = 0; index < match.num_cached_blocks; ++index) {
      ASSERT_EQ(table[static_cast<size_t>(index)],
                manager_.prefix_cache().Find(hashes[static_cast<size_t>(index)]))
          << "a prefix hit must share the cached physical block";
    }
    for (size_t index = static_cast<size_t>(match.num_cached_blocks); index < table.size();
         ++index) {
      ASSERT_EQ(manager_.device_allocator().ref_count(table[index]), 1)
          << "a new block must not be referenced by anyone else";
    }
    sequence.slots = match.num_cached_tokens + new_tokens;
    MaybeMarkComputed(id, sequence);
    live_.emplace(id, std::move(sequence));
  }

  void MaybeMarkComputed(int64_t id, const ModelSequence& sequence) {
    // Most steps complete at once; some stay uncomputed for a while (pending cache entries).
    if (random_() % 4 != 0) manager_.MarkComputed(id, HashesOf(sequence), sequence.slots);
  }

  void Grow() {
    const int64_t id = Pick(false);
    if (id < 0) return;
    ModelSequence& sequence = live_.at(id);
    const auto wanted = static_cast<int64_t>(1 + random_() % 6);
    while (std::ssize(sequence.tokens) < sequence.slots + wanted) {
      sequence.tokens.push_back(static_cast<int32_t>(random_() % 3));
    }
    const int64_t granted = manager_.NumAppendableTokens(id, wanted);
    if (granted == 0) return;
    const std::vector<int32_t> before = Table(manager_, id);
    std::vector<BlockCopy> copies;
    ASSERT_TRUE(manager_.Append(id, HashesOf(sequence), granted, copies).ok());
    const std::vector<int32_t> after = Table(manager_, id);
    for (size_t index = 0; index < after.size(); ++index) {
      const bool replaced = index >= before.size() || before[index] != after[index];
      if (replaced) {
        ASSERT_EQ(manager_.device_allocator().ref_count(after[index]), 1)
            << "a new block must not be referenced by anyone else";
      }
    }
    for (const BlockCopy& copy : copies) {
      ASSERT_GE(manager_.device_allocator().ref_count(copy.source_block), 1)
          << "a copy-on-write source stays referenced by its other holders";
    }
    sequence.slots += granted;
    MaybeMarkComputed(id, sequence);
  }

  void Fork() {
    const int64_t parent = Pick(false);
    if (parent < 0) return;
    const int64_t child = next_id_++;
    ASSERT_TRUE(manager_.Fork(parent, child).ok());
    live_.emplace(child, live_.at(parent));
  }

  void SwapOut() {
    const int64_t id = Pick(false);
    if (id < 0 || !manager_.CanSwapOut(id)) return;
    std::vector<BlockSwap> swaps;
    const size_t blocks = manager_.BlockTable(id).size();
    ASSERT_TRUE(manager_.SwapOut(id, swaps).ok());
    ASSERT_EQ(swaps.size(), blocks);
    live_.at(id).swapped = true;
  }

  void SwapIn() {
    const int64_t id = Pick(true);
    if (id < 0) return;
    if (!manager_.CanSwapIn(id, 0)) {
      std::vector<BlockSwap> swaps;
      ASSERT_EQ(manager_.SwapIn(id, swaps).code(), absl::StatusCode::kResourceExhausted);
      return;
    }
    std::vector<BlockSwap> swaps;
    ASSERT_TRUE(manager_.SwapIn(id, swaps).ok());
    for (const BlockSwap& swap : swaps) {
      ASSERT_EQ(manager_.device_allocator().ref_count(swap.device_block), 1);
    }
    live_.at(id).swapped = false;
  }

  // Blocks leave the evictable list by revival (content kept) or eviction (content dropped);
  // every block released before an evicted one must have left too, and newly evictable blocks
  // join at the most recent end in release order.
  void CheckLruOrder(const std::vector<int32_t>& before, const std::vector<uint64_t>& hashes) {
    const std::vector<int32_t> after = manager_.device_allocator().EvictableInLruOrder();
    const std::set<int32_t> after_set(after.begin(), after.end());
    size_t survivors = 0;
    bool kept_one = false;
    for (const int32_t block : before) {
      if (after_set.contains(block)) {
        ASSERT_EQ(after[survivors], block) << "surviving evictable blocks keep their order";
        ++survivors;
        kept_one = true;
        continue;
      }
      const bool revived =
          manager_.prefix_cache().state(block) != PrefixCache::BlockState::kUncached &&
          manager_.prefix_cache().hash(block) == hashes[static_cast<size_t>(block)];
      ASSERT_TRUE(revived || !kept_one)
          << "block " << block << " was evicted while an older evictable block was kept";
    }
  }

  std::mt19937 random_;
  BlockManager manager_;
  std::vector<std::vector<int32_t>> prefixes_;
  std::map<int64_t, ModelSequence> live_;
  int64_t next_id_ = 1;
};

TEST(BlockManagerRandomTest, InvariantsHoldAfterEveryOperation) {
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    RandomOperations operations(seed);
    operations.Run(3000);
    if (testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace reflect
