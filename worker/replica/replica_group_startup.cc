#include "worker/replica/replica_group_startup.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/command_line.h"
#include "common/status_macros.h"
#include "worker/checkpoint.h"
#include "worker/parallel/communicator_factory.h"
#include "worker/parallel/follower.h"

namespace reflect {
namespace {

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

// Where this machine reaches a server listening on `host`.
std::string LocalAddress(const std::string& host) {
  if (host == "::") return "::1";
  return IsWildcard(host) ? "127.0.0.1" : host;
}

GlooOptions GroupGlooOptions(const ParallelConfig& config, const ReplicaGroupOptions& options) {
  GlooOptions gloo;
  gloo.hostname = options.advertise_host;
  // Every rank has joined membership by now; the bound is for collectives on a slow machine.
  gloo.timeout = std::max(config.join_timeout, absl::Seconds(30));
  return gloo;
}

// The engine loop's handle on a backend the group leader shares.
class SharedBackend : public Backend {
 public:
  explicit SharedBackend(std::shared_ptr<ParallelBackend> backend) : backend_(std::move(backend)) {}
  absl::Status Forward(const StepPlan& plan, std::vector<float>& logits) override {
    return backend_->Forward(plan, logits);
  }
  int64_t vocab_size() const override { return backend_->vocab_size(); }
  int64_t num_kv_blocks() const override { return backend_->num_kv_blocks(); }
  int64_t block_size() const override { return backend_->block_size(); }

 private:
  const std::shared_ptr<ParallelBackend> backend_;
};

[[noreturn]] void ExitGroupBroken() {
  std::fflush(nullptr);
  _exit(kGroupBrokenExitCode);
}

}  // namespace

absl::StatusOr<std::string> ResolveAdvertiseHost(const std::string& flag,
                                                 const std::string& listen_host,
                                                 const EnvironmentLookup& environment) {
  if (!flag.empty()) {
    if (IsWildcard(flag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--advertise_host ", flag, " is a wildcard; give an address peers reach"));
    }
    return flag;
  }
  if (std::optional<std::string> pod_ip = environment("POD_IP"); pod_ip && !pod_ip->empty()) {
    return *pod_ip;
  }
  if (!IsWildcard(listen_host)) return listen_host;
  return absl::InvalidArgumentError(
      absl::StrCat("--host ", listen_host,
                   " is a wildcard: set --advertise_host (or POD_IP) to the address "
                   "the other ranks reach this one at"));
}

absl::StatusOr<std::unique_ptr<ReplicaGroupLeader>> ReplicaGroupLeader::Start(
    const ParallelConfig& config, const ReplicaGroupOptions& options, RankLost on_rank_lost) {
  const absl::Time deadline = absl::Now() + config.join_timeout;
  const int world_size = config.layout.world_size();
  std::unique_ptr<ReplicaGroupLeader> leader(
      new ReplicaGroupLeader(world_size, std::move(on_rank_lost)));
  REFLECT_ASSIGN_OR_RETURN(leader->store_server_,
                           TcpStoreServer::Start(options.listen_host, config.leader_port));
  REFLECT_ASSIGN_OR_RETURN(
      std::unique_ptr<TcpStoreClient> store,
      TcpStoreClient::Connect(LocalAddress(options.listen_host), leader->store_server_->port(),
                              config.join_timeout));
  leader->store_ = std::move(store);
  ReplicaGroupLeader* self = leader.get();
  REFLECT_ASSIGN_OR_RETURN(
      leader->membership_,
      MembershipLeader::Start(
          *leader->store_, options.listen_host, world_size, options.membership,
          [self](int rank, const std::string& reason) { self->OnRankLost(rank, reason); }));
  std::fprintf(stderr, "reflect-worker: rank 0 of %d waiting for its followers on %s:%d\n",
               world_size, options.listen_host.c_str(), leader->store_server_->port());
  REFLECT_RETURN_IF_ERROR(leader->membership_->WaitForRanks(deadline));
  REFLECT_ASSIGN_OR_RETURN(ReplicaGroup group,
                           JoinReplicaGroup(leader->store_, config.layout, config.tensor_kind,
                                            GroupGlooOptions(config, options)));
  REFLECT_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                           Checkpoint::Open(options.model_dir));
  REFLECT_ASSIGN_OR_RETURN(leader->backend_,
                           CreateParallelCpuBackend(std::move(checkpoint), options.model,
                                                    options.backend, std::move(group)));
  std::fprintf(stderr, "reflect-worker: rank 0 of %d ready\n", world_size);
  return leader;
}

ReplicaGroupLeader::~ReplicaGroupLeader() { Stop(); }

std::unique_ptr<Backend> ReplicaGroupLeader::TakeBackend() {
  return std::make_unique<SharedBackend>(backend_);
}

void ReplicaGroupLeader::OnRankLost(int rank, const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++lost_;
    lost_changed_.notify_all();
    if (stopping_) return;
  }
  on_rank_lost_(rank, reason);
}

void ReplicaGroupLeader::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (backend_ == nullptr) return;  // the followers never got a group to stop
  if (absl::Status stopped = backend_->Shutdown(); !stopped.ok()) {
    std::fprintf(stderr, "reflect-worker: stopping the followers: %s\n",
                 stopped.ToString().c_str());
  }
  std::unique_lock<std::mutex> lock(mutex_);
  lost_changed_.wait_for(lock, std::chrono::seconds(10),
                         [this] { return lost_ >= world_size_ - 1; });
}

int RunFollowerRank(const ParallelConfig& config, const ReplicaGroupOptions& options) {
  const int rank = config.layout.rank;
  const int world_size = config.layout.world_size();
  // The leader stops its followers after draining; a follower told to stop on its own waits for
  // that, within a grace period, rather than breaking the replica's in-flight requests.
  std::thread([] {
    const int signal_number = WaitForTerminationSignal();
    std::fprintf(stderr, "reflect-worker: signal %d: waiting up to 30 s for the leader's stop\n",
                 signal_number);
    absl::SleepFor(absl::Seconds(30));
    std::fflush(nullptr);
    _exit(0);
  }).detach();

  auto fail = [rank](const absl::Status& status) {
    std::fprintf(stderr, "reflect-worker: rank %d: %s\n", rank, status.ToString().c_str());
    return 1;
  };
  absl::StatusOr<std::unique_ptr<TcpStoreClient>> store =
      TcpStoreClient::Connect(config.leader_host, config.leader_port, config.join_timeout);
  if (!store.ok()) return fail(store.status());
  std::shared_ptr<TcpStoreClient> shared_store = std::move(*store);
  absl::StatusOr<std::unique_ptr<MembershipFollower>> membership = MembershipFollower::Join(
      *shared_store, config.leader_host, rank, options.membership, config.join_timeout,
      [rank](const std::string& reason) {
        std::fprintf(stderr, "reflect-worker: rank %d lost its leader: %s\n", rank, reason.c_str());
        ExitGroupBroken();
      });
  if (!membership.ok()) return fail(membership.status());
  absl::StatusOr<ReplicaGroup> group = JoinReplicaGroup(
      shared_store, config.layout, config.tensor_kind, GroupGlooOptions(config, options));
  if (!group.ok()) return fail(group.status());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return fail(checkpoint.status());
  std::fprintf(stderr, "reflect-worker: rank %d of %d ready\n", rank, world_size);
  const absl::Status finished =
      RunFollower(std::move(*checkpoint), options.model, options.backend, std::move(*group));
  membership->reset();  // leaves without a callback
  if (!finished.ok()) {
    std::fprintf(stderr, "reflect-worker: rank %d: replica group broke: %s\n", rank,
                 finished.ToString().c_str());
    return kGroupBrokenExitCode;
  }
  std::fprintf(stderr, "reflect-worker: rank %d of %d stopped by its leader\n", rank, world_size);
  return 0;
}

}  // namespace reflect
