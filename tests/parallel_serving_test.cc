// TP × PP replica groups as real processes on loopback (issue #4): reflect-worker ranks joined
// through --rank / --leader_address, behind real reflect-routers, and `reflect serve --tp --pp`.
//
// What is checked: a TP=2 × PP=2 replica (4 processes) answers 8 concurrent greedy requests with
// exactly the token ids of a single-rank replica; SIGKILL of one follower ends the group's
// in-flight streams with UNAVAILABLE within 10 s (its leader exits 3) while a single-rank replica
// behind the same router keeps serving; a rank that never arrives makes the leader exit nonzero
// within seconds naming it; `reflect serve --tp 2 --pp 2` answers a request and restarts all
// four ranks when one dies.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "reflect/v1/inference.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/serving_cluster.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

using testing::ChildProcess;
using testing::HttpCall;

constexpr absl::Duration kStartTimeout = absl::Seconds(60);

std::string TinyModel() { return testing::TestModelPath("tiny").string(); }

// A free loopback port (bound, read back, released): the group's rendezvous port.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// The ranks of one TP × PP replica: rank 0 serves gRPC on address(); followers serve nothing.
class ReplicaGroupProcesses {
 public:
  ReplicaGroupProcesses(int tp, int pp) {
    const std::string leader = absl::StrCat("127.0.0.1:", FreePort());
    for (int rank = 0; rank < tp * pp; ++rank) {
      ranks_.push_back(std::make_unique<ChildProcess>(testing::WorkerArguments(
          TinyModel(), {"--threads", "1", "--tensor_parallel", absl::StrCat(tp),
                        "--pipeline_parallel", absl::StrCat(pp), "--rank", absl::StrCat(rank),
                        "--leader_address", leader, "--join_timeout_seconds", "60"})));
    }
    address_ = ranks_.front()->WaitForLine("listening ", kStartTimeout);
  }
  const std::string& address() const { return address_; }
  ChildProcess& rank(int index) { return *ranks_.at(static_cast<size_t>(index)); }

 private:
  std::vector<std::unique_ptr<ChildProcess>> ranks_;
  std::string address_;
};

// A reflect-router over `replicas`, waited for until /readyz answers 200.
class Router {
 public:
  explicit Router(const std::vector<std::string>& replicas) {
    std::string list;
    for (const std::string& address : replicas) list += (list.empty() ? "" : ",") + address;
    process_ = std::make_unique<ChildProcess>(std::vector<std::string>{
        std::string(REFLECT_BINARY_DIR) + "/router/reflect-router", "--model", TinyModel(),
        "--replicas", list, "--host", "127.0.0.1", "--grpc_port", "0", "--http_port", "0"});
    grpc_ = process_->WaitForLine("grpc ", kStartTimeout);
    http_ = process_->WaitForLine("http ", kStartTimeout);
    ready_ = !grpc_.empty() && !http_.empty() && WaitForReadyz(200, kStartTimeout);
  }
  bool WaitForReadyz(int status, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    do {
      if (HttpCall(http_, "GET", "/readyz", "", {}, absl::Seconds(2)).status == status) return true;
      absl::SleepFor(absl::Milliseconds(100));
    } while (absl::Now() < deadline);
    return false;
  }
  bool ready() const { return ready_; }
  const std::string& grpc() const { return grpc_; }

 private:
  std::unique_ptr<ChildProcess> process_;
  std::string grpc_;
  std::string http_;
  bool ready_ = false;
};

struct StreamOutcome {
  grpc::Status status;
  std::vector<int32_t> token_ids;
  absl::Time ended;
};

v1::ChatRequest GreedyChat(int index, int max_tokens) {
  v1::ChatRequest request;
  v1::ChatMessage& message = *request.add_messages();
  message.set_role(v1::ROLE_USER);
  message.set_content(absl::StrCat("Parallel question ", index, ": ",
                                   std::string(static_cast<size_t>(index % 4) * 7, 'y')));
  v1::SamplingParams& sampling = *request.mutable_sampling();
  sampling.set_temperature(0.0);
  sampling.set_max_tokens(max_tokens);
  sampling.set_ignore_eos(true);
  return request;
}

StreamOutcome RunChat(const std::string& address, const v1::ChatRequest& request,
                      std::atomic<int>* started = nullptr) {
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  std::unique_ptr<grpc::ClientReader<v1::GenerationChunk>> reader = stub->Chat(&context, request);
  StreamOutcome outcome;
  v1::GenerationChunk chunk;
  bool first = true;
  while (reader->Read(&chunk)) {
    outcome.token_ids.insert(outcome.token_ids.end(), chunk.token_ids().begin(),
                             chunk.token_ids().end());
    if (first && started != nullptr && !chunk.token_ids().empty()) {
      ++*started;
      first = false;
    }
  }
  outcome.status = reader->Finish();
  outcome.ended = absl::Now();
  return outcome;
}

std::vector<StreamOutcome> RunConcurrently(const std::string& address, int count, int max_tokens) {
  std::vector<std::future<StreamOutcome>> futures;
  for (int index = 0; index < count; ++index) {
    futures.push_back(std::async(std::launch::async, [&address, index, max_tokens] {
      return RunChat(address, GreedyChat(index, max_tokens));
    }));
  }
  std::vector<StreamOutcome> outcomes;
  for (auto& future : futures) outcomes.push_back(future.get());
  return outcomes;
}

// One TP=2 × PP=2 group and one single-rank replica, started once for the suite; the failure test
// runs last and breaks the group.
class ParallelServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    single_ = new testing::WorkerProcess(TinyModel(), {"--threads", "1"});
    group_ = new ReplicaGroupProcesses(2, 2);
  }
  static void TearDownTestSuite() {
    delete group_;
    delete single_;
  }
  static testing::WorkerProcess* single_;
  static ReplicaGroupProcesses* group_;
};
testing::WorkerProcess* ParallelServingTest::single_ = nullptr;
ReplicaGroupProcesses* ParallelServingTest::group_ = nullptr;

TEST_F(ParallelServingTest, FourRankReplicaGivesTheSingleRankTokens) {
  ASSERT_FALSE(single_->address().empty());
  ASSERT_FALSE(group_->address().empty());
  Router reference({single_->address()});
  Router parallel({group_->address()});
  ASSERT_TRUE(reference.ready());
  ASSERT_TRUE(parallel.ready());
  const std::vector<StreamOutcome> expected = RunConcurrently(reference.grpc(), 8, 24);
  const std::vector<StreamOutcome> got = RunConcurrently(parallel.grpc(), 8, 24);
  for (size_t index = 0; index < expected.size(); ++index) {
    ASSERT_TRUE(expected[index].status.ok()) << expected[index].status.error_message();
    ASSERT_TRUE(got[index].status.ok()) << got[index].status.error_message();
    EXPECT_EQ(got[index].token_ids.size(), 24u);
    EXPECT_EQ(got[index].token_ids, expected[index].token_ids) << "request " << index;
  }
}

TEST_F(ParallelServingTest, KillingAFollowerEndsTheGroupsStreamsAndTheOtherReplicaServes) {
  ASSERT_FALSE(group_->address().empty());
  Router router({group_->address(), single_->address()});
  ASSERT_TRUE(router.ready());
  constexpr int kStreams = 8;
  std::atomic<int> started{0};
  std::vector<std::future<StreamOutcome>> futures;
  for (int index = 0; index < kStreams; ++index) {
    futures.push_back(std::async(std::launch::async, [&router, &started, index] {
      return RunChat(router.grpc(), GreedyChat(index, 160), &started);
    }));
  }
  const absl::Time start_deadline = absl::Now() + absl::Seconds(60);
  while (started.load() < kStreams && absl::Now() < start_deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(started.load(), kStreams);
  group_->rank(3).Signal(SIGKILL);
  const absl::Time killed = absl::Now();
  int unavailable = 0;
  for (auto& future : futures) {
    const StreamOutcome outcome = future.get();
    if (outcome.status.ok()) continue;  // served by the single-rank replica
    ++unavailable;
    EXPECT_EQ(outcome.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << outcome.status.error_message();
    EXPECT_LT(outcome.ended - killed, absl::Seconds(10)) << outcome.status.error_message();
  }
  EXPECT_GT(unavailable, 0);
  // The leader gives up on the group at once; the followers left follow it.
  EXPECT_EQ(group_->rank(0).WaitForExit(absl::Seconds(10)), 3);
  EXPECT_EQ(group_->rank(1).WaitForExit(absl::Seconds(10)), 3);
  // The router keeps serving from the other replica.
  EXPECT_TRUE(router.WaitForReadyz(200, absl::Seconds(10)));
  for (int index = 0; index < 4; ++index) {
    const StreamOutcome after = RunChat(router.grpc(), GreedyChat(index, 4));
    EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  }
}

TEST(ParallelStartupTest, ARankThatNeverArrivesFailsTheLeaderNamingIt) {
  const absl::Time start = absl::Now();
  const testing::ProcessResult result = testing::RunProcess(testing::WorkerArguments(
      TinyModel(), {"--tensor_parallel", "2", "--rank", "0", "--leader_address",
                    absl::StrCat("127.0.0.1:", FreePort()), "--join_timeout_seconds", "3"}));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  EXPECT_NE(result.standard_error.find("rank 1 of 2 did not join"), std::string::npos)
      << result.standard_error;
}

// The pids of `parent`'s reflect-worker children, by their --rank argument (0 when absent).
std::map<int, pid_t> WorkerRanks(pid_t parent) {
  std::map<int, pid_t> ranks;
  std::ifstream children(absl::StrCat("/proc/", parent, "/task/", parent, "/children"));
  for (pid_t pid; children >> pid;) {
    std::ifstream command_line(absl::StrCat("/proc/", pid, "/cmdline"));
    std::vector<std::string> arguments;
    for (std::string argument; std::getline(command_line, argument, '\0');) {
      arguments.push_back(argument);
    }
    if (arguments.empty() || !arguments[0].ends_with("reflect-worker")) continue;
    int rank = 0;
    for (size_t index = 0; index + 1 < arguments.size(); ++index) {
      if (arguments[index] == "--rank") rank = std::stoi(arguments[index + 1]);
    }
    ranks[rank] = pid;
  }
  return ranks;
}

TEST(ParallelStartupTest, ReflectServeRunsATwoByTwoReplicaAndRestartsItAsAUnit) {
  ChildProcess serve({testing::ReflectBinary().string(), "serve", "--model", TinyModel(), "--tp",
                      "2", "--pp", "2", "--grpc_port", "0", "--http_port", "0", "--kv_cache_gib",
                      "0.05", "--threads", "1"});
  const std::string http = serve.WaitForLine("[router] http ", kStartTimeout);
  ASSERT_FALSE(http.empty());
  ASSERT_FALSE(serve.WaitForLine("ready after ", kStartTimeout).empty());
  const nlohmann::json body = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                               {"max_tokens", 4}};
  const testing::HttpReply reply = HttpCall(http, "POST", "/v1/chat/completions", body.dump());
  EXPECT_EQ(reply.status, 200) << reply.body;

  // A follower dies: serve restarts all four ranks, and the replica answers again.
  const std::map<int, pid_t> before = WorkerRanks(serve.pid());
  ASSERT_EQ(before.size(), 4u);
  kill(before.at(2), SIGKILL);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  std::map<int, pid_t> after;
  while (absl::Now() < deadline) {
    after = WorkerRanks(serve.pid());
    const bool all_new =
        after.size() == 4 && std::none_of(after.begin(), after.end(),
                                          [&](auto& e) { return before.at(e.first) == e.second; });
    if (all_new) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(after.size(), 4u);
  for (const auto& [rank, pid] : after) EXPECT_NE(before.at(rank), pid) << "rank " << rank;
  int status = 0;
  while (absl::Now() < deadline && status != 200) {
    status = HttpCall(http, "POST", "/v1/chat/completions", body.dump()).status;
    if (status != 200) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(status, 200);
  serve.Signal(SIGINT);
  EXPECT_EQ(serve.WaitForExit(absl::Seconds(60)), 0);
}

}  // namespace
}  // namespace reflect
