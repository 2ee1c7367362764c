// Start-up of a TP × PP replica group inside reflect-worker (issue #4, DESIGN §1): the leader's
// rendezvous and liveness, and the whole life of a follower rank.
//
// Leader (rank 0), ReplicaGroupLeader::Start:
//   1. serve the rendezvous store (TcpStoreServer) on listen_host:leader_port and membership
//      (MembershipLeader) on listen_host, any port;
//   2. wait until every follower has joined, or fail at start + join_timeout with
//      DEADLINE_EXCEEDED naming the missing ranks ("ranks 1 of 2 did not join within 3s");
//   3. join the Gloo / NCCL groups (JoinReplicaGroup) and load rank 0's shard: TakeBackend() is
//      then the ParallelBackend the engine loop runs; prints "rank 0 of W ready" on stderr.
// From Start on, a follower that dies or hangs calls `on_rank_lost` on a membership thread
// (never after Stop). The worker exits there (code 3): a replica whose rank is gone cannot run a
// single step, and it is rebuilt as a unit — the LeaderWorkerSet recreates the group
// (RecreateGroupOnRestart), `reflect serve` restarts every rank — while the router sees the
// replica's streams break and ends them with UNAVAILABLE.
//
// Follower (rank > 0), RunFollowerRank: reach the leader's store (retrying for join_timeout),
// join membership, join the groups, print "rank R of W ready", run the leader's steps until its
// stop message. Returns the exit code: 0 after the stop, 1 when it cannot start, 3 when the group
// breaks (the leader's loss also exits 3 straight from the membership thread). SIGTERM does not
// stop a follower at once — its leader stops the group after draining — but after a 30 s grace.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "worker/backend.h"
#include "worker/cpu/cpu_backend.h"
#include "worker/parallel/group_membership.h"
#include "worker/parallel/parallel_backend.h"
#include "worker/parallel/parallel_config.h"
#include "worker/parallel/tcp_store.h"

namespace reflect {

// Exit code of a worker whose replica group broke (a rank lost, a failed step).
inline constexpr int kGroupBrokenExitCode = 3;

struct ReplicaGroupOptions {
  std::filesystem::path model_dir;
  ModelConfig model;
  CpuBackendOptions backend;   // must be equal on every rank
  std::string listen_host;     // the leader's store and membership listen here ("0.0.0.0": all)
  std::string advertise_host;  // where peers reach this rank's Gloo pairs; never a wildcard
  MembershipOptions membership;
};

// The address peers use for this rank: --advertise_host, else POD_IP, else --host unless it is a
// wildcard; INVALID_ARGUMENT asking for --advertise_host otherwise.
absl::StatusOr<std::string> ResolveAdvertiseHost(const std::string& flag,
                                                 const std::string& listen_host,
                                                 const EnvironmentLookup& environment);

// Rank 0's side of a group of more than one rank. Ownership: owns the store and membership, and
// shares the backend with the engine loop. Thread-safety: one thread (worker main).
class ReplicaGroupLeader {
 public:
  using RankLost = MembershipLeader::RankLost;

  static absl::StatusOr<std::unique_ptr<ReplicaGroupLeader>> Start(
      const ParallelConfig& config, const ReplicaGroupOptions& options, RankLost on_rank_lost);
  ~ReplicaGroupLeader();  // Stop() if not yet

  // The ParallelBackend for the engine loop (a forwarding Backend: this object shares it, so
  // Stop works whenever the engine is gone or stopped).
  std::unique_ptr<Backend> TakeBackend();

  // Ignores rank losses from now on, sends the followers the stop message (the engine must be
  // stopped: the backend takes one caller at a time) and waits up to 10 s for every follower to
  // leave, so none sees its leader vanish first. Idempotent.
  void Stop();

 private:
  ReplicaGroupLeader(int world_size, RankLost on_rank_lost)
      : world_size_(world_size), on_rank_lost_(std::move(on_rank_lost)) {}
  void OnRankLost(int rank, const std::string& reason);

  const int world_size_;
  const RankLost on_rank_lost_;
  std::mutex mutex_;
  std::condition_variable lost_changed_;
  bool stopping_ = false;
  int lost_ = 0;
  std::unique_ptr<TcpStoreServer> store_server_;
  std::shared_ptr<TcpStoreClient> store_;
  std::unique_ptr<MembershipLeader> membership_;
  std::shared_ptr<ParallelBackend> backend_;
};

// The whole life of a follower rank (config.layout.rank > 0); returns the process exit code.
int RunFollowerRank(const ParallelConfig& config, const ReplicaGroupOptions& options);

}  // namespace reflect
