// Bootstrap of a replica group: the TCP rendezvous store, group membership (liveness),
// ParallelConfig from flags or a LeaderWorkerSet environment, and JoinReplicaGroup.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/group_membership.h"
#include "worker/parallel/in_process_store.h"
#include "worker/parallel/parallel_config.h"
#include "worker/parallel/tcp_store.h"

namespace reflect {
namespace {

using ::testing::HasSubstr;

// A loopback socket connected to 127.0.0.1:port with plain system calls only, so a forked child
// of this multi-threaded test may use it; -1 on failure.
int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address;
  std::memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Joins the membership leader on `port` as rank 1 the way MembershipFollower does, with bare
// system calls (for a forked child); true when admitted. The connection stays open.
bool JoinAsRankOne(int port) {
  const int fd = ConnectLoopback(port);
  const char hello[8] = {'R', 'F', 'L', 'M', 0, 0, 0, 1};
  char answer = 0;
  return fd >= 0 && write(fd, hello, 8) == 8 && read(fd, &answer, 1) == 1 && answer == 'A';
}

std::unique_ptr<TcpStoreClient> ConnectClient(int port) {
  auto client = TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(10));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(TcpStoreTest, SetThenGetOverLoopback) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_GT((*server)->port(), 0);
  auto client = ConnectClient((*server)->port());
  ASSERT_NE(client, nullptr);
  const std::string binary("a\0b\xff", 4);
  ASSERT_TRUE(client->Set("gloo/world/0", binary).ok());
  auto value = client->Get("gloo/world/0", absl::Seconds(1));
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, binary);
  ASSERT_TRUE(client->Set("gloo/world/0", "replaced").ok());
  EXPECT_EQ(*client->Get("gloo/world/0", absl::Seconds(1)), "replaced");
}

TEST(TcpStoreTest, GetWaitsForALaterSet) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  auto reader = ConnectClient((*server)->port());
  auto writer = ConnectClient((*server)->port());
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(200));
    EXPECT_TRUE(writer->Set("nccl/tensor/id", "xyz").ok());
  });
  auto value = reader->Get("nccl/tensor/id", absl::Seconds(20));
  later.join();
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "xyz");
}

TEST(TcpStoreTest, GetTimesOutNamingTheKey) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = ConnectClient((*server)->port());
  const absl::Time start = absl::Now();
  auto value = client->Get("gloo/world/3", absl::Milliseconds(200));
  EXPECT_EQ(value.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(value.status().message(), HasSubstr("'gloo/world/3'"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // A deadline already past answers at once, never waits forever.
  EXPECT_EQ(client->Get("gloo/world/3", absl::Seconds(-1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // The connection stays usable after a timed-out Get.
  EXPECT_TRUE(client->Set("k", "v").ok());
}

TEST(TcpStoreTest, ClientStartedBeforeTheServerConnectsWhenItAppears) {
  int port = 0;
  {
    auto probe = TcpStoreServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok()) << probe.status();
    port = (*probe)->port();
  }
  std::unique_ptr<TcpStoreClient> client;
  std::thread follower([&] { client = ConnectClient(port); });
  absl::SleepFor(absl::Milliseconds(300));
  auto server = TcpStoreServer::Start("127.0.0.1", port);
  ASSERT_TRUE(server.ok()) << server.status();
  follower.join();
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Set("k", "v").ok());
  EXPECT_EQ(*client->Get("k", absl::Seconds(1)), "v");
}

TEST(TcpStoreTest, UnreachableLeaderIsNamedInTheError) {
  int port = 0;
  {
    auto probe = TcpStoreServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok()) << probe.status();
    port = (*probe)->port();
  }
  auto client = TcpStoreClient::Connect("127.0.0.1", port, absl::Milliseconds(300));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(client.status().message(),
              HasSubstr(absl::StrFormat("could not reach replica leader at 127.0.0.1:%d within "
                                        "300ms",
                                        port)));
}

TEST(TcpStoreTest, GarbageAndOversizedFramesDropOnlyThatConnection) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const std::vector<std::string> bad_messages = {
      std::string("\xff\xff\xff\xff", 4),              // 4 GiB frame
      std::string("\x00\x00\x00\x03XYZ", 7),           // unknown request
      std::string("\x00\x00\x00\x03S\xff\xff", 7),     // truncated Set
      std::string("\x00\x00\x00\x05G\x00\x00\x00", 8)  // frame shorter than announced
  };
  for (const std::string& message : bad_messages) {
    const int fd = ConnectLoopback(port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, message.data(), message.size()), static_cast<ssize_t>(message.size()));
    shutdown(fd, SHUT_WR);
    char reply[16];
    EXPECT_EQ(read(fd, reply, sizeof(reply)), 0) << "the server should drop the connection";
    close(fd);
  }
  auto client = ConnectClient(port);
  EXPECT_TRUE(client->Set("still", "serving").ok());
  EXPECT_EQ(*client->Get("still", absl::Seconds(1)), "serving");
}

TEST(TcpStoreTest, StoppingTheServerEndsAWaitingGet) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = ConnectClient((*server)->port());
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(200));
    server->reset();
  });
  auto value = client->Get("never", absl::InfiniteDuration());
  stopper.join();
  EXPECT_EQ(value.status().code(), absl::StatusCode::kUnavailable) << value.status();
}

// Collects on_rank_lost / on_leader_lost calls.
struct LossLog {
  std::mutex mutex;
  std::map<int, std::string> reasons;  // rank (0: the leader) → reason
  std::map<int, int> calls;

  void Record(int rank, const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex);
    reasons[rank] = reason;
    ++calls[rank];
  }
  // The reason rank `rank` was lost, waiting up to `timeout`; empty if it was not.
  std::string WaitFor(int rank, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (reasons.count(rank)) return reasons[rank];
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return "";
  }
};

MembershipOptions Fast() {
  MembershipOptions options;
  options.interval = absl::Milliseconds(100);
  options.timeout = absl::Seconds(1);
  return options;
}

MembershipOptions Never() {
  MembershipOptions options;
  options.interval = absl::Hours(1);
  options.timeout = absl::Hours(1);
  return options;
}

std::unique_ptr<MembershipLeader> StartLeader(InProcessStore& store, int world_size,
                                              const MembershipOptions& options, LossLog& log) {
  auto leader = MembershipLeader::Start(
      store, "127.0.0.1", world_size, options,
      [&log](int rank, const std::string& reason) { log.Record(rank, reason); });
  EXPECT_TRUE(leader.ok()) << leader.status();
  return leader.ok() ? std::move(*leader) : nullptr;
}

std::unique_ptr<MembershipFollower> JoinFollower(InProcessStore& store, int rank,
                                                 const MembershipOptions& options, LossLog& log) {
  auto follower =
      MembershipFollower::Join(store, "127.0.0.1", rank, options, absl::Seconds(10),
                               [&log](const std::string& reason) { log.Record(0, reason); });
  EXPECT_TRUE(follower.ok()) << follower.status();
  return follower.ok() ? std::move(*follower) : nullptr;
}

TEST(GroupMembershipTest, FollowerThatDisconnectsIsLostWithinASecond) {
  InProcessStore store;
  LossLog leader_log, follower_log;
  auto leader = StartLeader(store, 3, MembershipOptions(), leader_log);
  auto one = JoinFollower(store, 1, MembershipOptions(), follower_log);
  auto two = JoinFollower(store, 2, MembershipOptions(), follower_log);
  ASSERT_TRUE(leader->WaitForRanks(absl::Now() + absl::Seconds(10)).ok());
  EXPECT_THAT(leader->joined_ranks(), ::testing::ElementsAre(1, 2));
  two.reset();
  EXPECT_THAT(leader_log.WaitFor(2, absl::Seconds(1)), HasSubstr("connection closed"));
  absl::SleepFor(absl::Milliseconds(100));
  std::lock_guard<std::mutex> lock(leader_log.mutex);
  EXPECT_EQ(leader_log.calls[2], 1);
  EXPECT_EQ(leader_log.calls.count(1), 0u);
}

TEST(GroupMembershipTest, FollowerProcessThatExitsIsLostWithinASecond) {
  InProcessStore store;
  LossLog log;
  auto leader = StartLeader(store, 2, MembershipOptions(), log);
  const int port = leader->port();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(JoinAsRankOne(port) ? 0 : 1);  // dies without closing anything
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_THAT(log.WaitFor(1, absl::Seconds(1)), HasSubstr("connection closed"));
}

TEST(GroupMembershipTest, StoppedFollowerProcessIsLostAfterTheTimeout) {
  InProcessStore store;
  LossLog log;
  auto leader = StartLeader(store, 2, Fast(), log);
  const int port = leader->port();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (!JoinAsRankOne(port)) _exit(1);
    raise(SIGSTOP);  // alive, connection open, silent
    _exit(0);
  }
  const absl::Time start = absl::Now();
  const std::string reason = log.WaitFor(1, Fast().timeout + absl::Seconds(2));
  const absl::Duration took = absl::Now() - start;
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_THAT(reason, HasSubstr("silent"));
  EXPECT_GE(took, absl::Milliseconds(500));
}

TEST(GroupMembershipTest, SilentFollowerIsLostWithinTimeoutPlusASecond) {
  InProcessStore store;
  LossLog leader_log, follower_log;
  auto leader = StartLeader(store, 2, Fast(), leader_log);
  auto follower = JoinFollower(store, 1, Never(), follower_log);
  const absl::Time start = absl::Now();
  EXPECT_THAT(leader_log.WaitFor(1, Fast().timeout + absl::Seconds(1)), HasSubstr("silent"));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(500));
}

TEST(GroupMembershipTest, FollowersLearnThatTheLeaderLeftOrWentSilent) {
  {
    InProcessStore store;
    LossLog leader_log, follower_log;
    auto leader = StartLeader(store, 2, MembershipOptions(), leader_log);
    auto follower = JoinFollower(store, 1, MembershipOptions(), follower_log);
    leader.reset();
    EXPECT_THAT(follower_log.WaitFor(0, absl::Seconds(1)), HasSubstr("connection closed"));
  }
  {
    InProcessStore store;
    LossLog leader_log, follower_log;
    auto leader = StartLeader(store, 2, Never(), leader_log);
    auto follower = JoinFollower(store, 1, Fast(), follower_log);
    EXPECT_THAT(follower_log.WaitFor(0, Fast().timeout + absl::Seconds(1)), HasSubstr("silent"));
  }
}

TEST(GroupMembershipTest, WaitForRanksNamesTheRanksThatNeverArrived) {
  InProcessStore store;
  LossLog leader_log, follower_log;
  auto leader = StartLeader(store, 4, MembershipOptions(), leader_log);
  auto one = JoinFollower(store, 1, MembershipOptions(), follower_log);
  const absl::Status status = leader->WaitForRanks(absl::Now() + absl::Milliseconds(300));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(status.message(), HasSubstr("ranks 2, 3 of 4 did not join within"));
}

TEST(GroupMembershipTest, RejectsATakenRankAndOneOutsideTheGroup) {
  InProcessStore store;
  LossLog log;
  auto leader = StartLeader(store, 2, MembershipOptions(), log);
  auto one = JoinFollower(store, 1, MembershipOptions(), log);
  for (int rank : {1, 2, 0}) {
    auto again = MembershipFollower::Join(store, "127.0.0.1", rank, MembershipOptions(),
                                          absl::Seconds(5), [](const std::string&) {});
    EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable) << rank;
    EXPECT_THAT(again.status().message(), HasSubstr("rejected rank"));
  }
}

ParallelFlags TwoByTwo() {
  ParallelFlags flags;
  flags.tensor_parallel = 2;
  flags.pipeline_parallel = 2;
  return flags;
}

EnvironmentLookup Environment(std::map<std::string, std::string> variables) {
  return [variables](const std::string& name) -> std::optional<std::string> {
    auto found = variables.find(name);
    if (found == variables.end()) return std::nullopt;
    return found->second;
  };
}

TEST(ParallelConfigTest, FromExplicitFlags) {
  ParallelFlags flags = TwoByTwo();
  flags.rank = 3;
  flags.leader_address = "10.0.0.7:29600";
  flags.tensor_communicator = "nccl";
  auto config = ResolveParallelConfig(flags, Environment({{"LWS_LEADER_ADDRESS", "ignored"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layout.rank, 3);
  EXPECT_EQ(config->layout.world_size(), 4);
  EXPECT_EQ(config->leader_host, "10.0.0.7");
  EXPECT_EQ(config->leader_port, 29600);
  EXPECT_EQ(config->tensor_kind, CommunicatorKind::kNccl);
}

TEST(ParallelConfigTest, FromALeaderWorkerSetEnvironment) {
  ParallelFlags flags = TwoByTwo();
  flags.ranks_per_pod = 2;
  flags.local_rank = 1;
  auto config =
      ResolveParallelConfig(flags, Environment({{"LWS_LEADER_ADDRESS", "reflect-0.reflect.default"},
                                                {"LWS_GROUP_SIZE", "2"},
                                                {"LWS_WORKER_INDEX", "1"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layout.rank, 3);
  EXPECT_EQ(config->leader_host, "reflect-0.reflect.default");
  EXPECT_EQ(config->leader_port, 29500);
  EXPECT_EQ(config->tensor_kind, CommunicatorKind::kGloo);
}

TEST(ParallelConfigTest, OneRankNeedsNothing) {
  auto config = ResolveParallelConfig(ParallelFlags(), Environment({}));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layout.world_size(), 1);
  EXPECT_EQ(config->layout.rank, 0);
  EXPECT_TRUE(config->leader_host.empty());
}

TEST(ParallelConfigTest, ErrorsNameTheFlagOrVariable) {
  const std::map<std::string, std::string> lws = {
      {"LWS_LEADER_ADDRESS", "leader"}, {"LWS_GROUP_SIZE", "3"}, {"LWS_WORKER_INDEX", "0"}};
  auto message = [](const ParallelFlags& flags, std::map<std::string, std::string> variables) {
    auto config = ResolveParallelConfig(flags, Environment(std::move(variables)));
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(config.status().message());
  };
  EXPECT_EQ(message(TwoByTwo(), lws),
            "LWS_GROUP_SIZE=3 × ranks_per_pod 1 != tensor_parallel 2 × pipeline_parallel 2");
  EXPECT_THAT(message(TwoByTwo(), {{"LWS_LEADER_ADDRESS", "leader"}, {"LWS_GROUP_SIZE", "4"}}),
              HasSubstr("LWS_WORKER_INDEX is not set"));
  EXPECT_THAT(message(TwoByTwo(), {{"LWS_LEADER_ADDRESS", "leader"},
                                   {"LWS_GROUP_SIZE", "4"},
                                   {"LWS_WORKER_INDEX", "4"}}),
              HasSubstr("LWS_WORKER_INDEX=4"));
  EXPECT_THAT(message(TwoByTwo(), {{"LWS_LEADER_ADDRESS", "leader"},
                                   {"LWS_GROUP_SIZE", "four"},
                                   {"LWS_WORKER_INDEX", "0"}}),
              HasSubstr("LWS_GROUP_SIZE='four'"));
  EXPECT_THAT(message(TwoByTwo(), {}), HasSubstr("needs --rank and --leader_address"));
  ParallelFlags flags = TwoByTwo();
  flags.rank = 4;
  flags.leader_address = "leader:1";
  EXPECT_THAT(message(flags, {}), HasSubstr("--rank 4"));
  flags.rank = 1;
  flags.leader_address = "leader";
  EXPECT_THAT(message(flags, {}), HasSubstr("--leader_address"));
  flags.leader_address = "";
  EXPECT_THAT(message(flags, {}), HasSubstr("--leader_address"));
  flags = TwoByTwo();
  flags.tensor_communicator = "mpi";
  EXPECT_THAT(message(flags, lws), HasSubstr("unknown communicator 'mpi'"));
  flags = TwoByTwo();
  flags.local_rank = 1;
  EXPECT_THAT(message(flags, lws), HasSubstr("--local_rank 1"));
}

TEST(CommunicatorFactoryTest, ParsesKindsAndRefusesWhatCannotWork) {
  EXPECT_EQ(*ParseCommunicatorKind("gloo"), CommunicatorKind::kGloo);
  EXPECT_EQ(*ParseCommunicatorKind("nccl"), CommunicatorKind::kNccl);
  EXPECT_EQ(*ParseCommunicatorKind("single"), CommunicatorKind::kSingleRank);
  EXPECT_EQ(CommunicatorKindName(CommunicatorKind::kNccl), "nccl");
  EXPECT_FALSE(ParseCommunicatorKind("GLOO").ok());
  auto store = std::make_shared<InProcessStore>();
  EXPECT_EQ(CreateCommunicator(CommunicatorKind::kSingleRank, store, "g", 0, 2, GlooOptions())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
#ifndef REFLECT_WITH_NCCL
  auto nccl = CreateCommunicator(CommunicatorKind::kNccl, store, "g", 0, 2, GlooOptions());
  EXPECT_EQ(nccl.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(nccl.status().message(), HasSubstr("built without NCCL"));
#endif
}

TEST(JoinReplicaGroupTest, OneRankGetsSingleRankGroups) {
  ParallelLayout layout;
  auto group = JoinReplicaGroup(nullptr, layout, CommunicatorKind::kNccl, GlooOptions());
  ASSERT_TRUE(group.ok()) << group.status();
  EXPECT_EQ(group->world->size(), 1);
  EXPECT_EQ(group->tensor->size(), 1);
}

TEST(JoinReplicaGroupTest, TwoByTwoOverTheTcpStore) {
  auto server = TcpStoreServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  std::vector<std::vector<float>> tensor_sums(4), world_sums(4);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 4; ++rank) {
    ranks.emplace_back([&, rank] {
      std::shared_ptr<KeyValueStore> client = ConnectClient(port);
      ParallelLayout layout;
      layout.tensor_parallel = 2;
      layout.pipeline_parallel = 2;
      layout.rank = rank;
      auto group = JoinReplicaGroup(client, layout, CommunicatorKind::kGloo, GlooOptions());
      ASSERT_TRUE(group.ok()) << group.status();
      EXPECT_EQ(group->world->size(), 4);
      EXPECT_EQ(group->world->rank(), rank);
      EXPECT_EQ(group->tensor->size(), 2);
      EXPECT_EQ(group->tensor->rank(), layout.tp_rank());
      tensor_sums[rank] = {1.0f + rank, 10.0f * (1 + rank)};
      ASSERT_TRUE(group->tensor->AllReduceSum(tensor_sums[rank].data(), 2).ok());
      world_sums[rank] = {1.0f + rank};
      ASSERT_TRUE(group->world->AllReduceSum(world_sums[rank].data(), 1).ok());
    });
  }
  for (std::thread& rank : ranks) rank.join();
  // Stage 0 holds ranks 0 and 1, stage 1 ranks 2 and 3.
  EXPECT_THAT(tensor_sums[0], ::testing::ElementsAre(3.0f, 30.0f));
  EXPECT_THAT(tensor_sums[1], ::testing::ElementsAre(3.0f, 30.0f));
  EXPECT_THAT(tensor_sums[2], ::testing::ElementsAre(7.0f, 70.0f));
  EXPECT_THAT(tensor_sums[3], ::testing::ElementsAre(7.0f, 70.0f));
  for (int rank = 0; rank < 4; ++rank) EXPECT_THAT(world_sums[rank], ::testing::ElementsAre(10.0f));
}

}  // namespace
}  // namespace reflect
