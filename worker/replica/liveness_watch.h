// LivenessWatch: the replica's liveness tied to engine progress, not to the process being up
// (issue #7). It publishes grpc.health.v1 status for the service name kLivenessService: SERVING
// while the engine loop's last iteration (EngineLoad::last_progress) is younger than `timeout`,
// NOT_SERVING once it is older — a step stuck for that long (a hung collective, a deadlock) makes
// Kubernetes' gRPC liveness probe (`grpc: {port, service: liveness}`) restart the pod. An idle
// loop still iterates every heartbeat interval (1 s), so idleness is not a stall.
//
// Ownership: holds the health service and engine pointers, which must outlive it. Thread-safety:
// one internal thread checks once a second; the destructor stops and joins it.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/time/time.h"
#include "grpcpp/health_check_service_interface.h"
#include "worker/engine_loop.h"

namespace reflect {

inline constexpr char kLivenessService[] = "liveness";

// Whether an engine whose last iteration was at `last_progress` is live at `now`.
bool EngineIsLive(absl::Time last_progress, absl::Time now, absl::Duration timeout);

class LivenessWatch {
 public:
  LivenessWatch(grpc::HealthCheckServiceInterface* health, const EngineLoop* engine,
                absl::Duration timeout);
  ~LivenessWatch();
  LivenessWatch(const LivenessWatch&) = delete;
  LivenessWatch& operator=(const LivenessWatch&) = delete;

 private:
  void Run();

  grpc::HealthCheckServiceInterface* const health_;
  const EngineLoop* const engine_;
  const absl::Duration timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace reflect
