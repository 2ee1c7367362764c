// The replica's liveness follows engine progress (worker/replica/liveness_watch.h): the
// grpc.health.v1 service "liveness" is SERVING while the engine loop's last iteration is younger
// than --liveness_timeout_seconds, NOT_SERVING once older, while the process keeps serving.
#include "worker/replica/liveness_watch.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "tests/support/child_process.h"
#include "tests/support/grpc_health.h"
#include "tests/support/test_paths.h"

namespace reflect {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(60);
using grpc::health::v1::HealthCheckResponse;

TEST(LivenessWatchTest, LiveWhileTheLastIterationIsYoungerThanTheTimeout) {
  const absl::Time now = absl::Now();
  EXPECT_TRUE(EngineIsLive(now - absl::Seconds(59), now, absl::Seconds(60)));
  EXPECT_FALSE(EngineIsLive(now - absl::Seconds(60), now, absl::Seconds(60)));
  EXPECT_FALSE(EngineIsLive(absl::InfinitePast(), now, absl::Seconds(60)));
}

std::shared_ptr<grpc::Channel> StartedWorker(testing::ChildProcess& worker) {
  const std::string address = worker.WaitForLine("listening ", kTimeout);
  EXPECT_FALSE(address.empty()) << "reflect-worker did not report its port";
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  EXPECT_TRUE(testing::WaitForHealth(*channel, "reflect.internal.v1.Replica",
                                     HealthCheckResponse::SERVING));
  return channel;
}

TEST(LivenessWatchTest, ServingWorkerIsLive) {
  testing::ChildProcess worker{
      testing::WorkerArguments(testing::TestModelPath("tiny").string(), {})};
  std::shared_ptr<grpc::Channel> channel = StartedWorker(worker);
  EXPECT_TRUE(testing::WaitForHealth(*channel, kLivenessService, HealthCheckResponse::SERVING));
}

// An idle engine iterates once a second, so a 1 ms limit sees it stalled between iterations:
// liveness turns NOT_SERVING while the replica itself still answers SERVING.
TEST(LivenessWatchTest, ProgressOlderThanTheTimeoutIsNotLive) {
  testing::ChildProcess worker{testing::WorkerArguments(testing::TestModelPath("tiny").string(),
                                                        {"--liveness_timeout_seconds", "0.001"})};
  std::shared_ptr<grpc::Channel> channel = StartedWorker(worker);
  EXPECT_TRUE(testing::WaitForHealth(*channel, kLivenessService, HealthCheckResponse::NOT_SERVING));
  EXPECT_EQ(testing::HealthStatus(*channel, "reflect.internal.v1.Replica"),
            HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace reflect
