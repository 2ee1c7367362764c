// A real serving cluster on loopback for end-to-end tests: reflect-worker replicas and one
// reflect-router as child processes (DESIGN §1), with the addresses each prints.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/support/child_process.h"

namespace reflect::testing {

struct ServingClusterOptions {
  std::string model_dir;  // default: the tiny test model
  int replicas = 1;
  std::vector<std::string> worker_flags;  // appended to WorkerArguments' (metrics always on)
  std::vector<std::string> router_flags;  // appended to the router's
};

// Starts the workers (each with --metrics_port 0), then the router on ephemeral ports, and waits
// until /readyz answers 200 (ready() is false when anything failed to come up in 60 s).
// Ownership: owns the processes; the destructor kills whatever still runs.
class ServingCluster {
 public:
  explicit ServingCluster(ServingClusterOptions options);

  bool ready() const { return ready_; }
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& http_address() const { return http_address_; }
  // The internal gRPC and metrics addresses of replica `index`.
  const std::string& replica_address(int index) const;
  const std::string& replica_metrics_address(int index) const;
  ChildProcess& replica_process(int index);
  ChildProcess& router_process() { return *router_; }
  // Polls /readyz until it answers `status` or `timeout` passes.
  bool WaitForReadyz(int status, absl::Duration timeout);

 private:
  struct Replica {
    std::unique_ptr<ChildProcess> process;
    std::string address;
    std::string metrics_address;
  };
  std::vector<Replica> replicas_;
  std::unique_ptr<ChildProcess> router_;
  std::string grpc_address_;
  std::string http_address_;
  bool ready_ = false;
};

}  // namespace reflect::testing
