// Communicators: Gloo groups of 2-4 ranks as threads of this process (rendezvous through an
// InProcessStore), and the single-rank group.
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/splitmix64.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/in_process_store.h"
#include "worker/parallel/single_rank_communicator.h"

namespace reflect {
namespace {

using ::testing::HasSubstr;

using Group = std::vector<std::unique_ptr<Communicator>>;

// Joins `size` ranks of one Gloo group, each on its own thread.
Group CreateGroup(int size, const GlooOptions& options = {}) {
  auto store = std::make_shared<InProcessStore>();
  Group group(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      auto communicator = CreateGlooCommunicator(store, "test", rank, size, options);
      ASSERT_TRUE(communicator.ok()) << communicator.status();
      group[rank] = std::move(*communicator);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& communicator : group) EXPECT_NE(communicator, nullptr);
  return group;
}

// Runs `body(rank, communicator)` on every rank at once.
void OnEveryRank(Group& group, const std::function<void(int, Communicator&)>& body) {
  std::vector<std::thread> threads;
  for (int rank = 0; rank < static_cast<int>(group.size()); ++rank) {
    threads.emplace_back([&, rank] { body(rank, *group[rank]); });
  }
  for (std::thread& thread : threads) thread.join();
}

// Rank `rank`'s input: values of mixed magnitude, so the summation order shows in the bits.
std::vector<float> Input(int rank, int64_t count) {
  std::vector<float> values(count);
  uint64_t state = 1234 + rank * kSplitMix64Gamma;
  for (float& value : values) {
    state += kSplitMix64Gamma;
    const uint64_t bits = SplitMix64Mix(state);
    value = static_cast<float>(static_cast<int64_t>(bits % 2000001) - 1000000) /
            static_cast<float>(1 + (bits >> 40) % 1000);
  }
  return values;
}

TEST(SingleRankCommunicatorTest, CollectivesKeepTheDataAndPointToPointHasNoPeer) {
  SingleRankCommunicator communicator;
  EXPECT_EQ(communicator.rank(), 0);
  EXPECT_EQ(communicator.size(), 1);
  std::vector<float> data = {1.5f, -2.0f, 3.25f};
  EXPECT_TRUE(communicator.AllReduceSum(data.data(), 3).ok());
  EXPECT_THAT(data, ::testing::ElementsAre(1.5f, -2.0f, 3.25f));
  std::vector<float> gathered(3);
  EXPECT_TRUE(communicator.AllGather(data.data(), 3, gathered.data()).ok());
  EXPECT_EQ(gathered, data);
  EXPECT_TRUE(communicator.Broadcast(data.data(), 12, 0, absl::Seconds(1)).ok());
  EXPECT_EQ(communicator.Broadcast(data.data(), 12, 1, absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(communicator.Send(data.data(), 12, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(communicator.Recv(data.data(), 12, 0, absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(communicator.AllReduceSum(data.data(), -1).code(), absl::StatusCode::kInvalidArgument);
}

class GlooGroupSizeTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooGroupSizeTest, AllReduceSumsInRankOrderWithIdenticalBitsOnEveryRank) {
  const int size = GetParam();
  Group group = CreateGroup(size);
  for (int64_t count : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
    std::vector<std::vector<float>> results(size);
    OnEveryRank(group, [&](int rank, Communicator& communicator) {
      results[rank] = Input(rank, count);
      EXPECT_TRUE(communicator.AllReduceSum(results[rank].data(), count).ok());
    });
    // The contract: ((x0 + x1) + x2) + … whatever the count, so the bits match exactly.
    std::vector<float> expected = Input(0, count);
    std::vector<double> exact(expected.begin(), expected.end());
    for (int rank = 1; rank < size; ++rank) {
      const std::vector<float> input = Input(rank, count);
      for (int64_t i = 0; i < count; ++i) {
        expected[i] += input[i];
        exact[i] += input[i];
      }
    }
    for (int rank = 0; rank < size; ++rank) {
      ASSERT_EQ(std::memcmp(results[rank].data(), expected.data(), count * sizeof(float)), 0)
          << "rank " << rank << " count " << count;
    }
    for (int64_t i = 0; i < count; i += 9973) {
      EXPECT_NEAR(results[0][i], exact[i], 1e-3 + 1e-5 * std::abs(exact[i]));
    }
  }
}

TEST_P(GlooGroupSizeTest, AllGatherConcatenatesInRankOrder) {
  const int size = GetParam();
  Group group = CreateGroup(size);
  for (int64_t count : {int64_t{1}, int64_t{5}, int64_t{300001}}) {
    OnEveryRank(group, [&](int rank, Communicator& communicator) {
      const std::vector<float> input = Input(rank, count);
      std::vector<float> output(count * size);
      ASSERT_TRUE(communicator.AllGather(input.data(), count, output.data()).ok());
      for (int from = 0; from < size; ++from) {
        const std::vector<float> expected = Input(from, count);
        EXPECT_EQ(std::memcmp(output.data() + from * count, expected.data(), count * 4), 0);
      }
    });
  }
}

TEST_P(GlooGroupSizeTest, BroadcastFromEveryRoot) {
  const int size = GetParam();
  Group group = CreateGroup(size);
  for (int root = 0; root < size; ++root) {
    OnEveryRank(group, [&](int rank, Communicator& communicator) {
      std::string data = rank == root ? "plan from " + std::to_string(root) : std::string(11, '?');
      ASSERT_TRUE(communicator.Broadcast(data.data(), 11, root, absl::Seconds(30)).ok());
      EXPECT_EQ(data, "plan from " + std::to_string(root));
    });
  }
}

TEST_P(GlooGroupSizeTest, SendAndRecvKeepOrderPerPair) {
  const int size = GetParam();
  Group group = CreateGroup(size);
  // Every rank sends three messages of different sizes to the next rank around the ring.
  OnEveryRank(group, [&](int rank, Communicator& communicator) {
    const int next = (rank + 1) % size;
    const int previous = (rank + size - 1) % size;
    std::thread sender([&] {
      for (int message = 0; message < 3; ++message) {
        const std::vector<float> data = Input(rank * 10 + message, 100 + message);
        EXPECT_TRUE(communicator.Send(data.data(), data.size() * 4, next).ok());
      }
    });
    for (int message = 0; message < 3; ++message) {
      std::vector<float> data(100 + message);
      ASSERT_TRUE(
          communicator.Recv(data.data(), data.size() * 4, previous, absl::Seconds(30)).ok());
      EXPECT_EQ(data, Input(previous * 10 + message, 100 + message));
    }
    sender.join();
  });
}

INSTANTIATE_TEST_SUITE_P(Sizes, GlooGroupSizeTest, ::testing::Values(2, 3, 4));

TEST(GlooCommunicatorTest, MovesSixtyFourMebibyteMessages) {
  Group group = CreateGroup(2);
  const int64_t count = 16 * 1024 * 1024;
  OnEveryRank(group, [&](int rank, Communicator& communicator) {
    std::vector<float> data(count, 1.0f + rank);
    ASSERT_TRUE(communicator.AllReduceSum(data.data(), count).ok());
    EXPECT_EQ(data.front(), 3.0f);
    EXPECT_EQ(data.back(), 3.0f);
    if (rank == 0) {
      data[count - 1] = 42.0f;
      EXPECT_TRUE(communicator.Send(data.data(), count * 4, 1).ok());
    } else {
      std::fill(data.begin(), data.end(), 0.0f);
      ASSERT_TRUE(communicator.Recv(data.data(), count * 4, 0, absl::Seconds(60)).ok());
      EXPECT_EQ(data.front(), 3.0f);
      EXPECT_EQ(data.back(), 42.0f);
    }
  });
}

TEST(GlooCommunicatorTest, InfiniteTimeoutWaitsForALateRoot) {
  Group group = CreateGroup(2);
  OnEveryRank(group, [&](int rank, Communicator& communicator) {
    int value = rank == 0 ? 7 : 0;
    if (rank == 0) absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(communicator.Broadcast(&value, sizeof(value), 0, absl::InfiniteDuration()).ok());
    EXPECT_EQ(value, 7);
    ASSERT_TRUE(communicator.Broadcast(&value, sizeof(value), 1, absl::InfiniteDuration()).ok());
  });
}

TEST(GlooCommunicatorTest, RankThatNeverJoinsFailsTheOthersWithinTheTimeout) {
  auto store = std::make_shared<InProcessStore>();
  GlooOptions options;
  options.timeout = absl::Seconds(1);
  const absl::Time start = absl::Now();
  std::vector<absl::Status> statuses(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      statuses[rank] = CreateGlooCommunicator(store, "partial", rank, 3, options).status();
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  for (const absl::Status& status : statuses) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    EXPECT_THAT(status.message(), HasSubstr("rank 2 did not join gloo group 'partial'"));
  }
}

TEST(GlooCommunicatorTest, PeerThatLeavesFailsTheCollectiveThenEveryCallFailsFast) {
  GlooOptions options;
  options.timeout = absl::Seconds(20);
  Group group = CreateGroup(2, options);
  std::thread leaver([&] {
    absl::SleepFor(absl::Milliseconds(100));
    group[1].reset();
  });
  const absl::Time start = absl::Now();
  std::vector<float> data(1000, 1.0f);
  const absl::Status status = group[0]->AllReduceSum(data.data(), data.size());
  leaver.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  const absl::Time again = absl::Now();
  EXPECT_EQ(group[0]->Broadcast(data.data(), 4, 0, absl::InfiniteDuration()), status);
  EXPECT_EQ(group[0]->Recv(data.data(), 4, 1, absl::InfiniteDuration()), status);
  EXPECT_LT(absl::Now() - again, absl::Seconds(1));
}

TEST(GlooCommunicatorTest, InfiniteRecvEndsWhenThePeerLeaves) {
  Group group = CreateGroup(2);
  std::thread leaver([&] {
    absl::SleepFor(absl::Milliseconds(100));
    group[1].reset();
  });
  int value = 0;
  const absl::Status status = group[0]->Recv(&value, sizeof(value), 1, absl::InfiniteDuration());
  leaver.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST(GlooCommunicatorTest, SilentPeerTimesOutTheCollective) {
  GlooOptions options;
  options.timeout = absl::Seconds(1);
  Group group = CreateGroup(2, options);
  const absl::Time start = absl::Now();
  std::vector<float> data(10, 1.0f);
  const absl::Status status = group[0]->AllReduceSum(data.data(), data.size());
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(group[0]->AllReduceSum(data.data(), data.size()), status);
}

}  // namespace
}  // namespace reflect
