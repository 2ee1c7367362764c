#include "worker/parallel/tcp_store.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/parallel/socket_io.h"

namespace reflect {
namespace {

constexpr int64_t kMaxFrameBytes = 1 << 20;
// Beyond a Get's own timeout, how long a client waits for the server's answer.
constexpr absl::Duration kReplySlack = absl::Seconds(10);

void AppendInteger(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>(value >> (8 * i)));
}

bool TakeInteger(const std::string& in, size_t* offset, int bytes, uint64_t* value) {
  if (in.size() < *offset + bytes) return false;
  *value = 0;
  for (int i = 0; i < bytes; ++i) *value = (*value << 8) | static_cast<uint8_t>(in[*offset + i]);
  *offset += bytes;
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpStoreServer>> TcpStoreServer::Start(const std::string& host,
                                                                      int port) {
  int bound_port = 0;
  REFLECT_ASSIGN_OR_RETURN(const int fd, ListenTcp(host, port, &bound_port));
  return std::unique_ptr<TcpStoreServer>(new TcpStoreServer(fd, bound_port));
}

TcpStoreServer::TcpStoreServer(int listen_fd, int port)
    : port_(port),
      acceptor_(std::make_unique<ConnectionAcceptor>(listen_fd, [this](int fd) { Serve(fd); })) {}

TcpStoreServer::~TcpStoreServer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  acceptor_.reset();
}

void TcpStoreServer::Serve(int fd) {
  while (true) {
    absl::StatusOr<std::string> request = ReadFrame(fd, kMaxFrameBytes, absl::InfiniteFuture());
    if (!request.ok()) return;
    const std::string reply = Handle(*request);
    if (reply.empty() || !WriteFrame(fd, reply).ok()) return;
  }
}

std::string TcpStoreServer::Handle(const std::string& request) {
  if (request.empty()) return "";
  size_t offset = 1;
  if (request[0] == 'S') {
    uint64_t key_length = 0;
    if (!TakeInteger(request, &offset, 4, &key_length) || key_length > request.size() - offset) {
      return "";
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      values_[request.substr(offset, key_length)] = request.substr(offset + key_length);
    }
    changed_.notify_all();
    return "K";
  }
  uint64_t timeout_ms = 0;
  if (request[0] != 'G' || !TakeInteger(request, &offset, 8, &timeout_ms)) return "";
  const std::string key = request.substr(offset);
  const bool forever = static_cast<int64_t>(timeout_ms) < 0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(forever ? 0 : timeout_ms);
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    if (stopping_) return "";
    auto found = values_.find(key);
    if (found != values_.end()) return "K" + found->second;
    if (forever) {
      changed_.wait(lock);
    } else if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      found = values_.find(key);
      return found != values_.end() ? "K" + found->second : "T";
    }
  }
}

absl::StatusOr<std::unique_ptr<TcpStoreClient>> TcpStoreClient::Connect(
    const std::string& host, int port, absl::Duration connect_timeout) {
  absl::StatusOr<int> fd = ConnectTcp(host, port, absl::Now() + connect_timeout);
  if (!fd.ok()) {
    return absl::UnavailableError(
        absl::StrFormat("could not reach replica leader at %s:%d within %s: %s", host, port,
                        absl::FormatDuration(connect_timeout), fd.status().message()));
  }
  return std::unique_ptr<TcpStoreClient>(new TcpStoreClient(host, port, connect_timeout, *fd));
}

TcpStoreClient::TcpStoreClient(std::string host, int port, absl::Duration connect_timeout, int fd)
    : host_(std::move(host)), port_(port), connect_timeout_(connect_timeout), idle_fds_{fd} {}

TcpStoreClient::~TcpStoreClient() {
  for (int fd : idle_fds_) close(fd);
}

absl::Status TcpStoreClient::Set(const std::string& key, const std::string& value) {
  std::string request = "S";
  AppendInteger(&request, key.size(), 4);
  request += key;
  request += value;
  return Call(request, absl::Now() + kReplySlack).status();
}

absl::StatusOr<std::string> TcpStoreClient::Get(const std::string& key, absl::Duration timeout) {
  const bool forever = timeout == absl::InfiniteDuration();
  std::string request = "G";
  AppendInteger(&request,
                forever ? ~uint64_t{0} : std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout)),
                8);
  request += key;
  const absl::StatusOr<std::string> reply =
      Call(request, forever ? absl::InfiniteFuture() : absl::Now() + timeout + kReplySlack);
  if (!reply.ok()) return reply.status();
  if (absl::StartsWith(*reply, "T")) {
    return absl::DeadlineExceededError(
        absl::StrFormat("key '%s' did not appear in the replica leader's store within %s", key,
                        absl::FormatDuration(timeout)));
  }
  return reply->substr(1);
}

absl::StatusOr<std::string> TcpStoreClient::Call(const std::string& request,
                                                 absl::Time reply_deadline) {
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_fds_.empty()) {
      fd = idle_fds_.back();
      idle_fds_.pop_back();
    }
  }
  if (fd < 0) {
    absl::StatusOr<int> connected = ConnectTcp(host_, port_, absl::Now() + connect_timeout_);
    if (!connected.ok()) {
      return absl::UnavailableError(absl::StrFormat("replica leader at %s:%d: %s", host_, port_,
                                                    connected.status().message()));
    }
    fd = *connected;
  }
  absl::Status status = WriteFrame(fd, request);
  absl::StatusOr<std::string> reply =
      status.ok() ? ReadFrame(fd, kMaxFrameBytes, reply_deadline) : status;
  if (reply.ok() && (reply->empty() || ((*reply)[0] != 'K' && (*reply)[0] != 'T'))) {
    reply = absl::InternalError("malformed reply");
  }
  if (!reply.ok()) {
    close(fd);
    return absl::UnavailableError(absl::StrFormat("replica leader's store at %s:%d: %s", host_,
                                                  port_, reply.status().message()));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  idle_fds_.push_back(fd);
  return reply;
}

}  // namespace reflect
