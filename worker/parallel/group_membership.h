// Liveness of a replica group (issue #4): the leader learns within milliseconds that a follower
// process died (its connection closes) and within `timeout` that one hangs (SIGSTOP, a stuck
// host: it goes silent); followers learn the same of the leader.
//
// How: the leader listens on a port of its own, any free one, and publishes it in the group's
// KeyValueStore under "membership/port", so only the rendezvous port needs to be known. Each
// follower keeps one TCP connection to it: it says its rank (8 bytes: "RFLM", big-endian u32),
// the leader accepts ('A') or rejects ('R': outside [1, world_size) or already joined), then both
// sides send one byte every `interval` and count any byte as life. A rank joins once; after it is
// lost it stays lost (the replica is rebuilt, not patched).
//
// Callbacks run on a membership thread, at most once per rank (once for the leader), never after
// the destructor returns; they must not block for long nor destroy the object that called them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/key_value_store.h"
#include "worker/parallel/socket_io.h"

namespace reflect {

struct MembershipOptions {
  absl::Duration interval = absl::Seconds(1);  // between two heartbeats, each direction
  absl::Duration timeout = absl::Seconds(5);   // silence after which the other side is lost
};

// The leader's side. Ownership: owns its listening socket, one thread accepting and one per
// follower. Thread-safety: WaitForRanks and joined_ranks from any thread.
class MembershipLeader {
 public:
  using RankLost = std::function<void(int rank, const std::string& reason)>;

  // Listens on host:0 (host "0.0.0.0" or "::" for every interface) and publishes the port.
  static absl::StatusOr<std::unique_ptr<MembershipLeader>> Start(KeyValueStore& store,
                                                                 const std::string& host,
                                                                 int world_size,
                                                                 const MembershipOptions& options,
                                                                 RankLost on_rank_lost);
  ~MembershipLeader();
  MembershipLeader(const MembershipLeader&) = delete;
  MembershipLeader& operator=(const MembershipLeader&) = delete;

  int port() const { return port_; }
  // OK once every follower (ranks 1 … world_size-1) has joined, lost since or not; else
  // DEADLINE_EXCEEDED at `deadline`: "ranks 2, 3 of 4 did not join within 1m" (time since Start).
  absl::Status WaitForRanks(absl::Time deadline);
  std::vector<int> joined_ranks();

 private:
  MembershipLeader(int listen_fd, int port, int world_size, const MembershipOptions& options,
                   RankLost on_rank_lost);
  void Serve(int fd);
  // Reads and answers a follower's hello; its rank, or -1 when rejected.
  int Admit(int fd);

  const int port_;
  const int world_size_;
  const MembershipOptions options_;
  const RankLost on_rank_lost_;
  const absl::Time started_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable joined_changed_;
  std::vector<bool> joined_;
  std::unique_ptr<ConnectionAcceptor> acceptor_;  // last: its threads use the members above
};

// A follower's side: one connection to the leader, heartbeats until destroyed. Destroying it
// closes the connection, which the leader reports as this rank lost.
class MembershipFollower {
 public:
  using LeaderLost = std::function<void(const std::string& reason)>;

  // Reads the leader's membership port from `store` and joins as `rank`, all within
  // `join_timeout`; UNAVAILABLE when the leader cannot be reached or rejects the rank.
  static absl::StatusOr<std::unique_ptr<MembershipFollower>> Join(
      KeyValueStore& store, const std::string& leader_host, int rank,
      const MembershipOptions& options, absl::Duration join_timeout, LeaderLost on_leader_lost);
  ~MembershipFollower();
  MembershipFollower(const MembershipFollower&) = delete;
  MembershipFollower& operator=(const MembershipFollower&) = delete;

 private:
  MembershipFollower(int fd, const MembershipOptions& options, LeaderLost on_leader_lost);

  const int fd_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace reflect
