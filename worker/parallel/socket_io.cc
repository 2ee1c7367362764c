#include "worker/parallel/socket_io.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace reflect {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrFormat("%s: %s", what, std::strerror(errno)));
}

struct AddressList {
  addrinfo* head = nullptr;
  ~AddressList() {
    if (head != nullptr) freeaddrinfo(head);
  }
};

absl::Status Resolve(const std::string& host, int port, bool passive, AddressList* addresses) {
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  const std::string service = std::to_string(port);
  const int result =
      getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &addresses->head);
  if (result != 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot resolve %s: %s", host, gai_strerror(result)));
  }
  return absl::OkStatus();
}

// Milliseconds to pass poll(): -1 for an infinite deadline, at least 0.
int PollMilliseconds(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now()) + 1;
  return static_cast<int>(std::clamp<int64_t>(left, 0, 60 * 60 * 1000));
}

absl::Status ConnectOnce(const std::string& host, int port, int* fd) {
  AddressList addresses;
  REFLECT_RETURN_IF_ERROR(Resolve(host, port, false, &addresses));
  absl::Status last = absl::UnavailableError("no address");
  for (addrinfo* address = addresses.head; address != nullptr; address = address->ai_next) {
    const int candidate = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (candidate < 0) {
      last = Errno("socket");
      continue;
    }
    if (connect(candidate, address->ai_addr, address->ai_addrlen) == 0) {
      const int one = 1;
      setsockopt(candidate, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      *fd = candidate;
      return absl::OkStatus();
    }
    last = Errno("connect");
    close(candidate);
  }
  return last;
}

}  // namespace

absl::StatusOr<int> ListenTcp(const std::string& host, int port, int* bound_port) {
  AddressList addresses;
  REFLECT_RETURN_IF_ERROR(Resolve(host, port, true, &addresses));
  const addrinfo* address = addresses.head;
  const int fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, address->ai_addr, address->ai_addrlen) != 0 || listen(fd, 128) != 0) {
    const absl::Status status = Errno(absl::StrFormat("listen on %s:%d", host, port));
    close(fd);
    return status;
  }
  sockaddr_storage bound;
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  *bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

absl::StatusOr<int> AcceptTcp(int listen_fd) {
  while (true) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    if (errno != EINTR && errno != ECONNABORTED) return Errno("accept");
  }
}

ConnectionAcceptor::ConnectionAcceptor(int listen_fd, std::function<void(int fd)> serve)
    : listen_fd_(listen_fd), serve_(std::move(serve)), accept_thread_([this] { AcceptLoop(); }) {}

ConnectionAcceptor::~ConnectionAcceptor() {
  shutdown(listen_fd_, SHUT_RDWR);
  accept_thread_.join();
  close(listen_fd_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Connection& connection : connections_) shutdown(connection.fd, SHUT_RDWR);
  }
  for (Connection& connection : connections_) connection.thread.join();
}

void ConnectionAcceptor::AcceptLoop() {
  while (true) {
    absl::StatusOr<int> fd = AcceptTcp(listen_fd_);
    if (!fd.ok()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (!it->done) {
        ++it;
        continue;
      }
      it->thread.join();
      it = connections_.erase(it);
    }
    Connection& connection = connections_.emplace_back();
    connection.fd = *fd;
    connection.thread = std::thread([this, &connection] {
      serve_(connection.fd);
      std::lock_guard<std::mutex> lock(mutex_);
      close(connection.fd);
      connection.fd = -1;
      connection.done = true;
    });
  }
}

absl::StatusOr<int> ConnectTcp(const std::string& host, int port, absl::Time deadline) {
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    int fd = -1;
    const absl::Status status = ConnectOnce(host, port, &fd);
    if (status.ok()) return fd;
    if (absl::Now() + backoff >= deadline) return absl::DeadlineExceededError(status.message());
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

absl::Status WriteAll(int fd, const void* data, int64_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = send(fd, bytes, size, MSG_NOSIGNAL);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Errno("send");
    }
    bytes += written;
    size -= written;
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, void* data, int64_t size, absl::Time deadline) {
  char* bytes = static_cast<char*>(data);
  while (size > 0) {
    pollfd waiting = {fd, POLLIN, 0};
    const int ready = poll(&waiting, 1, PollMilliseconds(deadline));
    if (ready < 0 && errno != EINTR) return Errno("poll");
    if (ready <= 0) {
      if (absl::Now() >= deadline) return absl::DeadlineExceededError("read timed out");
      continue;
    }
    const ssize_t got = recv(fd, bytes, size, 0);
    if (got == 0) return absl::UnavailableError("connection closed");
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Errno("recv");
    }
    bytes += got;
    size -= got;
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(int fd, const std::string& payload) {
  std::string frame(4, '\0');
  const uint32_t length = htonl(static_cast<uint32_t>(payload.size()));
  std::memcpy(frame.data(), &length, 4);
  frame += payload;
  return WriteAll(fd, frame.data(), frame.size());
}

absl::StatusOr<std::string> ReadFrame(int fd, int64_t max_size, absl::Time deadline) {
  uint32_t length = 0;
  REFLECT_RETURN_IF_ERROR(ReadAll(fd, &length, 4, deadline));
  length = ntohl(length);
  if (length > max_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("frame of %d bytes exceeds the limit of %d", length, max_size));
  }
  std::string payload(length, '\0');
  REFLECT_RETURN_IF_ERROR(ReadAll(fd, payload.data(), length, deadline));
  return payload;
}

absl::Status SplitHostPort(const std::string& address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  int value = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &value) || value <= 0 || value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("'%s' is not host:port (port in 1-65535)", address));
  }
  *host = address.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  *port = value;
  return absl::OkStatus();
}

}  // namespace reflect
