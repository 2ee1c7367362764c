#include "worker/parallel/group_membership.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/parallel/socket_io.h"

namespace reflect {
namespace {

constexpr char kPortKey[] = "membership/port";
constexpr char kMagic[4] = {'R', 'F', 'L', 'M'};

// Sends a byte every interval and listens, until the peer closes the connection or stays silent
// for options.timeout (returns why), or `stopping` is set (returns "").
std::string ExchangeHeartbeats(int fd, const MembershipOptions& options,
                               const std::atomic<bool>& stopping) {
  absl::Time last_heard = absl::Now();
  absl::Time next_send = last_heard;
  while (!stopping) {
    absl::Time now = absl::Now();
    if (now >= next_send) {
      const char beat = 'H';
      if (send(fd, &beat, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
          errno != EINTR) {
        return stopping ? "" : absl::StrFormat("connection closed: %s", std::strerror(errno));
      }
      next_send = now + options.interval;
    }
    if (now - last_heard >= options.timeout) {
      return absl::StrFormat("silent for %s", absl::FormatDuration(now - last_heard));
    }
    pollfd waiting = {fd, POLLIN, 0};
    const absl::Duration wait = std::min(next_send, last_heard + options.timeout) - now;
    poll(&waiting, 1, static_cast<int>(absl::ToInt64Milliseconds(wait)) + 1);
    if ((waiting.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    char bytes[64];
    const ssize_t got = recv(fd, bytes, sizeof(bytes), MSG_DONTWAIT);
    if (stopping) break;
    if (got == 0) return "connection closed (process exited?)";
    if (got < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::StrFormat("connection closed: %s", std::strerror(errno));
    }
    if (got > 0) last_heard = absl::Now();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<MembershipLeader>> MembershipLeader::Start(
    KeyValueStore& store, const std::string& host, int world_size, const MembershipOptions& options,
    RankLost on_rank_lost) {
  int port = 0;
  REFLECT_ASSIGN_OR_RETURN(const int fd, ListenTcp(host, 0, &port));
  std::unique_ptr<MembershipLeader> leader(
      new MembershipLeader(fd, port, world_size, options, std::move(on_rank_lost)));
  REFLECT_RETURN_IF_ERROR(store.Set(kPortKey, std::to_string(port)));
  return leader;
}

MembershipLeader::MembershipLeader(int listen_fd, int port, int world_size,
                                   const MembershipOptions& options, RankLost on_rank_lost)
    : port_(port),
      world_size_(world_size),
      options_(options),
      on_rank_lost_(std::move(on_rank_lost)),
      started_(absl::Now()),
      joined_(std::max(world_size, 1), false),
      acceptor_(std::make_unique<ConnectionAcceptor>(listen_fd, [this](int fd) { Serve(fd); })) {}

MembershipLeader::~MembershipLeader() {
  stopping_ = true;
  acceptor_.reset();
}

void MembershipLeader::Serve(int fd) {
  const int rank = Admit(fd);
  if (rank <= 0) return;
  const std::string reason = ExchangeHeartbeats(fd, options_, stopping_);
  if (!reason.empty()) on_rank_lost_(rank, reason);
}

int MembershipLeader::Admit(int fd) {
  char hello[8];
  if (!ReadAll(fd, hello, sizeof(hello), absl::Now() + options_.timeout).ok() ||
      std::memcmp(hello, kMagic, sizeof(kMagic)) != 0) {
    return -1;
  }
  uint32_t rank = 0;
  std::memcpy(&rank, hello + 4, 4);
  rank = ntohl(rank);
  bool admitted = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    admitted = rank >= 1 && rank < static_cast<uint32_t>(world_size_) && !joined_[rank];
    if (admitted) joined_[rank] = true;
  }
  const char answer = admitted ? 'A' : 'R';
  if (!WriteAll(fd, &answer, 1).ok() || !admitted) return -1;
  joined_changed_.notify_all();
  return static_cast<int>(rank);
}

absl::Status MembershipLeader::WaitForRanks(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto all_joined = [&] { return std::count(joined_.begin() + 1, joined_.end(), false) == 0; };
  while (!all_joined()) {
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      std::vector<int> missing;
      for (int rank = 1; rank < world_size_; ++rank) {
        if (!joined_[rank]) missing.push_back(rank);
      }
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s %s of %d did not join within %s", missing.size() == 1 ? "rank" : "ranks",
          absl::StrJoin(missing, ", "), world_size_, absl::FormatDuration(deadline - started_)));
    }
    joined_changed_.wait_for(lock,
                             absl::ToChronoMilliseconds(std::min(deadline - now, absl::Seconds(1)) +
                                                        absl::Milliseconds(1)));
  }
  return absl::OkStatus();
}

std::vector<int> MembershipLeader::joined_ranks() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int> ranks;
  for (int rank = 1; rank < world_size_; ++rank) {
    if (joined_[rank]) ranks.push_back(rank);
  }
  return ranks;
}

absl::StatusOr<std::unique_ptr<MembershipFollower>> MembershipFollower::Join(
    KeyValueStore& store, const std::string& leader_host, int rank,
    const MembershipOptions& options, absl::Duration join_timeout, LeaderLost on_leader_lost) {
  const absl::Time deadline = absl::Now() + join_timeout;
  REFLECT_ASSIGN_OR_RETURN(const std::string port_text, store.Get(kPortKey, join_timeout));
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port)) {
    return absl::InternalError(absl::StrFormat("bad membership port '%s'", port_text));
  }
  absl::StatusOr<int> fd = ConnectTcp(leader_host, port, deadline);
  if (!fd.ok()) {
    return absl::UnavailableError(absl::StrFormat("could not reach the replica leader at %s:%d: %s",
                                                  leader_host, port, fd.status().message()));
  }
  char hello[8];
  std::memcpy(hello, kMagic, sizeof(kMagic));
  const uint32_t wire_rank = htonl(static_cast<uint32_t>(rank));
  std::memcpy(hello + 4, &wire_rank, 4);
  char answer = 0;
  absl::Status status = WriteAll(*fd, hello, sizeof(hello));
  if (status.ok()) status = ReadAll(*fd, &answer, 1, absl::Now() + options.timeout);
  if (status.ok() && answer != 'A') {
    status = absl::UnavailableError(
        absl::StrFormat("the replica leader rejected rank %d (outside the group, or taken)", rank));
  }
  if (!status.ok()) {
    close(*fd);
    return absl::UnavailableError(absl::StrFormat("joining the replica leader at %s:%d: %s",
                                                  leader_host, port, status.message()));
  }
  return std::unique_ptr<MembershipFollower>(
      new MembershipFollower(*fd, options, std::move(on_leader_lost)));
}

MembershipFollower::MembershipFollower(int fd, const MembershipOptions& options,
                                       LeaderLost on_leader_lost)
    : fd_(fd), thread_([this, options, on_leader_lost = std::move(on_leader_lost)] {
        const std::string reason = ExchangeHeartbeats(fd_, options, stopping_);
        if (!reason.empty()) on_leader_lost(reason);
      }) {}

MembershipFollower::~MembershipFollower() {
  stopping_ = true;
  shutdown(fd_, SHUT_RDWR);
  thread_.join();
  close(fd_);
}

}  // namespace reflect
