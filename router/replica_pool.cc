#include "router/replica_pool.h"

#include <cstdio>
#include <utility>

namespace reflect {

ReplicaPool::ReplicaPool(ReplicaPoolOptions options) : options_(std::move(options)) {
  for (const std::string& address : options_.addresses) {
    auto replica = std::make_unique<Replica>();
    replica->client = std::make_unique<ReplicaClient>(address);
    replicas_.push_back(std::move(replica));
  }
  poller_ = std::thread([this] { PollLoop(); });
}

ReplicaPool::~ReplicaPool() {
  std::unique_lock lock(mutex_);
  stopping_ = true;
  changed_.notify_all();
  lock.unlock();
  poller_.join();
  // Poll callbacks touch this object; each ends within poll_timeout.
  lock.lock();
  changed_.wait(lock, [this] { return polls_in_flight_ == 0; });
}

void ReplicaPool::PollLoop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    for (size_t index = 0; index < replicas_.size(); ++index) {
      Replica& replica = *replicas_[index];
      if (replica.poll_in_flight) continue;
      replica.poll_in_flight = true;
      ++polls_in_flight_;
      const uint64_t poll_number = ++polls_started_;
      // GetLoad only starts the call, but its callback takes mutex_: start it unlocked.
      lock.unlock();
      replica.client->GetLoad(options_.poll_timeout,
                              [this, index, poll_number](absl::StatusOr<ReplicaLoadReport> report) {
                                PollDone(index, poll_number, std::move(report));
                              });
      lock.lock();
    }
    changed_.wait_for(lock, absl::ToChronoNanoseconds(options_.poll_interval),
                      [this] { return stopping_; });
  }
}

void ReplicaPool::PollDone(size_t index, uint64_t poll_number,
                           absl::StatusOr<ReplicaLoadReport> report) {
  const std::lock_guard lock(mutex_);
  Replica& replica = *replicas_[index];
  replica.poll_in_flight = false;
  --polls_in_flight_;
  if (!report.ok()) {
    SetRotationLocked(index, false, std::string(report.status().message()));
  } else {
    replica.report = *std::move(report);
    replica.outstanding_requests_at_report = replica.outstanding_requests;
    if (!options_.model.empty() && replica.report.model != options_.model) {
      SetRotationLocked(
          index, false,
          "serves model \"" + replica.report.model + "\", not \"" + options_.model + "\"");
    } else if (!replica.report.accepting) {
      SetRotationLocked(index, false, "not accepting requests");
    } else if (poll_number > replica.rotation_barrier) {
      SetRotationLocked(index, true, "poll ok");
    }
  }
  // Under the lock: the destructor may destroy the condition variable once it sees zero.
  changed_.notify_all();
}

void ReplicaPool::SetRotationLocked(size_t index, bool in_rotation, const std::string& why) {
  Replica& replica = *replicas_[index];
  // Staying out for a new reason (say a replica that never came in, found serving another model)
  // is logged too, at most every 10 s.
  const absl::Time now = absl::Now();
  if (replica.in_rotation == in_rotation &&
      (in_rotation || replica.out_of_rotation_reason == why ||
       now - replica.out_of_rotation_logged < absl::Seconds(10))) {
    return;
  }
  replica.out_of_rotation_reason = in_rotation ? "" : why;
  replica.out_of_rotation_logged = in_rotation ? absl::InfinitePast() : now;
  replica.in_rotation = in_rotation;
  std::fprintf(stderr, "reflect-router: replica=%s event=%s reason=\"%s\"\n",
               replica.client->address().c_str(), in_rotation ? "in_rotation" : "out_of_rotation",
               why.c_str());
  changed_.notify_all();
}

std::string ReplicaPool::ReplicaId(size_t index) const {
  const std::lock_guard lock(mutex_);
  const Replica& replica = *replicas_[index];
  return replica.report.replica_id.empty() ? replica.client->address() : replica.report.replica_id;
}

std::string ReplicaPool::Describe(size_t index) const {
  const std::lock_guard lock(mutex_);
  const Replica& replica = *replicas_[index];
  const std::string& address = replica.client->address();
  if (replica.report.replica_id.empty() || replica.report.replica_id == address) return address;
  return address + " (" + replica.report.replica_id + ")";
}

RotationSnapshot ReplicaPool::InRotation(const std::vector<bool>& excluded) const {
  RotationSnapshot snapshot;
  const std::lock_guard lock(mutex_);
  for (size_t index = 0; index < replicas_.size(); ++index) {
    const Replica& replica = *replicas_[index];
    if (!replica.in_rotation || (index < excluded.size() && excluded[index])) continue;
    snapshot.replica_indexes.push_back(index);
    snapshot.candidates.push_back(
        ReplicaCandidate{.outstanding_requests = replica.outstanding_requests,
                         .outstanding_requests_at_report = replica.outstanding_requests_at_report,
                         .reported_running = replica.report.running_requests,
                         .reported_waiting = replica.report.waiting_requests,
                         .reported_waiting_prompt_tokens = replica.report.waiting_prompt_tokens,
                         .kv_cache_usage_ratio = replica.report.kv_cache_usage_ratio,
                         .prefix_summary = replica.report.prefix_summary});
  }
  return snapshot;
}

void ReplicaPool::AddOutstanding(size_t index) {
  const std::lock_guard lock(mutex_);
  ++replicas_[index]->outstanding_requests;
}

void ReplicaPool::RemoveOutstanding(size_t index) {
  const std::lock_guard lock(mutex_);
  --replicas_[index]->outstanding_requests;
}

void ReplicaPool::TakeOutOfRotation(size_t index, const absl::Status& why) {
  const std::lock_guard lock(mutex_);
  // A poll already on its way may have been answered before the break; only a later one counts.
  replicas_[index]->rotation_barrier = polls_started_;
  SetRotationLocked(index, false, std::string(why.message()));
}

bool ReplicaPool::ready() const {
  const std::lock_guard lock(mutex_);
  for (const auto& replica : replicas_) {
    if (replica->in_rotation) return true;
  }
  return false;
}

bool ReplicaPool::WaitUntilReady(absl::Duration timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] {
    for (const auto& replica : replicas_) {
      if (replica->in_rotation) return true;
    }
    return false;
  });
}

std::vector<ReplicaStatus> ReplicaPool::Statuses() const {
  std::vector<ReplicaStatus> statuses;
  const std::lock_guard lock(mutex_);
  for (const auto& replica : replicas_) {
    statuses.push_back(ReplicaStatus{.address = replica->client->address(),
                                     .replica_id = replica->report.replica_id,
                                     .in_rotation = replica->in_rotation,
                                     .outstanding_requests = replica->outstanding_requests,
                                     .reported_running = replica->report.running_requests,
                                     .reported_waiting = replica->report.waiting_requests,
                                     .kv_cache_usage_ratio = replica->report.kv_cache_usage_ratio});
  }
  return statuses;
}

}  // namespace reflect
