#include "tests/support/serving_cluster.h"

#include "absl/time/clock.h"
#include "tests/support/http_client.h"
#include "tests/support/test_paths.h"

namespace reflect::testing {

constexpr absl::Duration kStartTimeout = absl::Seconds(60);

ServingCluster::ServingCluster(ServingClusterOptions options) {
  if (options.model_dir.empty()) options.model_dir = TestModelPath("tiny").string();
  std::vector<std::string> addresses;
  for (int index = 0; index < options.replicas; ++index) {
    std::vector<std::string> flags = {"--metrics_port", "0"};
    flags.insert(flags.end(), options.worker_flags.begin(), options.worker_flags.end());
    Replica replica;
    replica.process =
        std::make_unique<ChildProcess>(WorkerArguments(options.model_dir, std::move(flags)));
    replica.address = replica.process->WaitForLine("listening ", kStartTimeout);
    replica.metrics_address = replica.process->WaitForLine("metrics ", kStartTimeout);
    if (replica.address.empty()) return;
    addresses.push_back(replica.address);
    replicas_.push_back(std::move(replica));
  }
  std::string replica_list;
  for (const std::string& address : addresses) {
    replica_list += (replica_list.empty() ? "" : ",") + address;
  }
  std::vector<std::string> arguments = {std::string(REFLECT_BINARY_DIR) + "/router/reflect-router",
                                        "--model",
                                        options.model_dir,
                                        "--replicas",
                                        replica_list,
                                        "--host",
                                        "127.0.0.1",
                                        "--grpc_port",
                                        "0",
                                        "--http_port",
                                        "0"};
  arguments.insert(arguments.end(), options.router_flags.begin(), options.router_flags.end());
  router_ = std::make_unique<ChildProcess>(std::move(arguments));
  grpc_address_ = router_->WaitForLine("grpc ", kStartTimeout);
  http_address_ = router_->WaitForLine("http ", kStartTimeout);
  ready_ = !grpc_address_.empty() && !http_address_.empty() && WaitForReadyz(200, kStartTimeout);
}

const std::string& ServingCluster::replica_address(int index) const {
  return replicas_.at(static_cast<size_t>(index)).address;
}

const std::string& ServingCluster::replica_metrics_address(int index) const {
  return replicas_.at(static_cast<size_t>(index)).metrics_address;
}

ChildProcess& ServingCluster::replica_process(int index) {
  return *replicas_.at(static_cast<size_t>(index)).process;
}

bool ServingCluster::WaitForReadyz(int status, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (HttpCall(http_address_, "GET", "/readyz", "", {}, absl::Seconds(2)).status == status) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

}  // namespace reflect::testing
