#include "kvcache/block_allocator.h"

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace reflect {
namespace {

TEST(BlockAllocatorTest, HandsOutEveryBlockOnceThenReportsExhaustion) {
  BlockAllocator allocator(4);
  EXPECT_EQ(allocator.num_blocks(), 4);
  std::set<int32_t> handed_out;
  for (int index = 0; index < 4; ++index) {
    absl::StatusOr<int32_t> block = allocator.Allocate();
    ASSERT_TRUE(block.ok()) << block.status();
    EXPECT_EQ(allocator.ref_count(*block), 1);
    EXPECT_TRUE(handed_out.insert(*block).second) << "block " << *block << " handed out twice";
  }
  EXPECT_EQ(handed_out, (std::set<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(allocator.num_free(), 0);
  absl::StatusOr<int32_t> exhausted = allocator.Allocate();
  EXPECT_EQ(exhausted.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(BlockAllocatorTest, ReleasedBlockIsReusedFirst) {
  BlockAllocator allocator(3);
  const int32_t first = *allocator.Allocate();
  const int32_t second = *allocator.Allocate();
  allocator.Release(first);
  EXPECT_EQ(allocator.num_free(), 2);
  EXPECT_EQ(allocator.ref_count(first), 0);
  EXPECT_EQ(*allocator.Allocate(), first);
  allocator.Release(second);
  allocator.Release(first);
  EXPECT_EQ(allocator.num_free(), 3);
}

TEST(BlockAllocatorTest, SharedBlockIsFreeOnlyAfterTheLastReference) {
  BlockAllocator allocator(2);
  const int32_t block = *allocator.Allocate();
  allocator.AddReference(block);
  allocator.AddReference(block);
  EXPECT_EQ(allocator.ref_count(block), 3);
  allocator.Release(block);
  allocator.Release(block);
  EXPECT_EQ(allocator.ref_count(block), 1);
  EXPECT_EQ(allocator.num_free(), 1);
  allocator.Release(block);
  EXPECT_EQ(allocator.ref_count(block), 0);
  EXPECT_EQ(allocator.num_free(), 2);
}

TEST(BlockAllocatorTest, EmptyPoolIsAlwaysExhausted) {
  BlockAllocator allocator(0);
  EXPECT_EQ(allocator.Allocate().status().code(), absl::StatusCode::kResourceExhausted);
}

#ifdef NDEBUG
TEST(BlockAllocatorTest, MisuseIsIgnoredInReleaseBuilds) {
  BlockAllocator allocator(2);
  const int32_t block = *allocator.Allocate();
  allocator.Release(block);
  allocator.Release(block);  // double release
  allocator.Release(7);      // out of range
  allocator.AddReference(block);
  EXPECT_EQ(allocator.ref_count(block), 0);
  EXPECT_EQ(allocator.num_free(), 2);
  // Still two distinct blocks, not the same block twice.
  const int32_t first = *allocator.Allocate();
  const int32_t second = *allocator.Allocate();
  EXPECT_NE(first, second);
  EXPECT_FALSE(allocator.Allocate().ok());
}
#else
TEST(BlockAllocatorDeathTest, MisuseAssertsInDebugBuilds) {
  BlockAllocator allocator(2);
  const int32_t block = *allocator.Allocate();
  allocator.Release(block);
  EXPECT_DEATH(allocator.Release(block), "Release of a free or unknown KV block");
  EXPECT_DEATH(allocator.AddReference(block), "AddReference on a free or unknown KV block");
}
#endif

// Random allocate / share / release sequences against a model of who holds what.
TEST(BlockAllocatorTest, RandomOperationsKeepTheInvariants) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 random(seed);
    constexpr int32_t kBlocks = 16;
    BlockAllocator allocator(kBlocks);
    std::map<int32_t, int32_t> expected_counts;  // blocks in use -> references held
    std::vector<int32_t> references;             // one entry per reference held
    for (int operation = 0; operation < 2000; ++operation) {
      const int choice = static_cast<int>(random() % 3);
      if (choice == 0) {
        absl::StatusOr<int32_t> block = allocator.Allocate();
        if (static_cast<int32_t>(expected_counts.size()) == kBlocks) {
          ASSERT_EQ(block.status().code(), absl::StatusCode::kResourceExhausted);
          continue;
        }
        ASSERT_TRUE(block.ok()) << block.status();
        ASSERT_FALSE(expected_counts.contains(*block)) << "block " << *block << " handed out "
                                                       << "while still referenced";
        expected_counts[*block] = 1;
        references.push_back(*block);
      } else if (references.empty()) {
        continue;
      } else if (choice == 1) {
        const int32_t block = references[random() % references.size()];
        allocator.AddReference(block);
        ++expected_counts[block];
        references.push_back(block);
      } else {
        const size_t index = random() % references.size();
        const int32_t block = references[index];
        references.erase(references.begin() + static_cast<std::ptrdiff_t>(index));
        allocator.Release(block);
        if (--expected_counts[block] == 0) expected_counts.erase(block);
      }
      ASSERT_EQ(allocator.num_free(), kBlocks - static_cast<int32_t>(expected_counts.size()));
      for (int32_t block = 0; block < kBlocks; ++block) {
        const auto found = expected_counts.find(block);
        ASSERT_GE(allocator.ref_count(block), 0);
        ASSERT_EQ(allocator.ref_count(block), found == expected_counts.end() ? 0 : found->second);
      }
    }
    for (int32_t block : references) allocator.Release(block);
    EXPECT_EQ(allocator.num_free(), kBlocks) << "seed " << seed;
    for (int32_t block = 0; block < kBlocks; ++block) EXPECT_EQ(allocator.ref_count(block), 0);
  }
}

}  // namespace
}  // namespace reflect
