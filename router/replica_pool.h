// The router's set of replicas (DESIGN §1): one ReplicaClient per configured address, what each
// last reported, how many of this router's requests each carries, and whether it is in rotation.
//
// Rotation, per replica:
//
//   out ──poll OK and accepting──▶ in ──poll fails, or accepting = false──▶ out
//                                   │
//                                   └──TakeOutOfRotation (a stream broke)──▶ out, and only a poll
//                                      started after that moment may bring it back
//
// A poller thread starts GetLoad on every replica every `poll_interval` (asynchronously, at most
// one poll per replica in flight, each with `poll_timeout`), so one hung replica never delays the
// others' polls. The thread only starts calls; results land on gRPC threads.
//
// Ownership: owns the clients and the poller. The destructor stops the poller and waits for the
// polls in flight (at most poll_timeout); streams must be closed before it runs. Thread-safety:
// every method may be called from any thread (one mutex, O(replicas) work at most).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/replica_choice.h"
#include "router/replica_client.h"
#include "router/request_router.h"

namespace reflect {

struct ReplicaPoolOptions {
  std::vector<std::string> addresses;  // validated by the caller
  absl::Duration poll_interval = absl::Milliseconds(200);
  absl::Duration poll_timeout = absl::Seconds(1);
  // The model name every replica must report; a replica reporting another stays out of rotation.
  // Empty: not checked.
  std::string model;
};

// The replicas in rotation at one moment, as ChooseReplica takes them.
struct RotationSnapshot {
  std::vector<size_t> replica_indexes;       // into the pool
  std::vector<ReplicaCandidate> candidates;  // same order
};

class ReplicaPool {
 public:
  explicit ReplicaPool(ReplicaPoolOptions options);
  ~ReplicaPool();
  ReplicaPool(const ReplicaPool&) = delete;
  ReplicaPool& operator=(const ReplicaPool&) = delete;

  size_t size() const { return replicas_.size(); }
  ReplicaClient& client(size_t index) { return *replicas_[index]->client; }
  // "<address>" or "<address> (<replica id>)" once it reported an id different from its address.
  std::string Describe(size_t index) const;
  // The id it last reported, else its address.
  std::string ReplicaId(size_t index) const;

  // The replicas in rotation, minus those whose `excluded[index]` is true (excluded may be empty).
  RotationSnapshot InRotation(const std::vector<bool>& excluded) const;

  // A stream to `index` opened or closed (this router's outstanding requests on it).
  void AddOutstanding(size_t index);
  void RemoveOutstanding(size_t index);

  // A stream to `index` broke (the replica died or went away): out of rotation at once.
  void TakeOutOfRotation(size_t index, const absl::Status& why);

  bool ready() const;
  bool WaitUntilReady(absl::Duration timeout);
  std::vector<ReplicaStatus> Statuses() const;

 private:
  struct Replica {
    std::unique_ptr<ReplicaClient> client;
    // All below guarded by ReplicaPool::mutex_.
    bool poll_in_flight = false;
    bool in_rotation = false;
    std::string out_of_rotation_reason;  // the last one logged
    absl::Time out_of_rotation_logged;   // when it was logged
    uint64_t rotation_barrier = 0;       // polls numbered at or below it cannot bring it back
    ReplicaLoadReport report;
    int64_t outstanding_requests = 0;
    int64_t outstanding_requests_at_report = 0;
  };

  void PollLoop();
  void PollDone(size_t index, uint64_t poll_number, absl::StatusOr<ReplicaLoadReport> report);
  void SetRotationLocked(size_t index, bool in_rotation, const std::string& why);

  const ReplicaPoolOptions options_;
  std::vector<std::unique_ptr<Replica>> replicas_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // rotation changed, a poll ended, or stopping
  uint64_t polls_started_ = 0;       // guarded; numbers the polls
  int64_t polls_in_flight_ = 0;      // guarded
  bool stopping_ = false;            // guarded
  std::thread poller_;
};

}  // namespace reflect
