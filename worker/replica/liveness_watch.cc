#include "worker/replica/liveness_watch.h"

#include <chrono>

namespace reflect {

bool EngineIsLive(absl::Time last_progress, absl::Time now, absl::Duration timeout) {
  return now - last_progress < timeout;
}

LivenessWatch::LivenessWatch(grpc::HealthCheckServiceInterface* health, const EngineLoop* engine,
                             absl::Duration timeout)
    : health_(health), engine_(engine), timeout_(timeout), thread_([this] { Run(); }) {}

LivenessWatch::~LivenessWatch() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void LivenessWatch::Run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const bool live = EngineIsLive(engine_->Load().last_progress, absl::Now(), timeout_);
    health_->SetServingStatus(kLivenessService, live);
    wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
  }
}

}  // namespace reflect
