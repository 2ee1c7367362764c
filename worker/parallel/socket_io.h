// Blocking TCP helpers for the rendezvous store and group membership (POSIX sockets, IPv4 and
// IPv6 through getaddrinfo). Every wait is bounded by a deadline (absl::InfiniteFuture() for
// none); errors are UNAVAILABLE, or DEADLINE_EXCEEDED when the deadline passes. Sockets are plain
// file descriptors that the caller closes. Thread-safety: stateless.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reflect {

// A listening socket on host:port (port 0: any free port); *bound_port receives the port.
absl::StatusOr<int> ListenTcp(const std::string& host, int port, int* bound_port);

// Accepts one connection; UNAVAILABLE once the listening socket is shut down.
absl::StatusOr<int> AcceptTcp(int listen_fd);

// Connects to host:port, retrying (the name may not resolve yet, the server may not listen yet)
// until `deadline`; then DEADLINE_EXCEEDED with the last error.
absl::StatusOr<int> ConnectTcp(const std::string& host, int port, absl::Time deadline);

absl::Status WriteAll(int fd, const void* data, int64_t size);
// Reads exactly `size` bytes; UNAVAILABLE "connection closed" on end of stream.
absl::Status ReadAll(int fd, void* data, int64_t size, absl::Time deadline);

// A frame is a 4-byte big-endian length then that many bytes. ReadFrame rejects (INVALID_ARGUMENT)
// a frame longer than `max_size` without reading it.
absl::Status WriteFrame(int fd, const std::string& payload);
absl::StatusOr<std::string> ReadFrame(int fd, int64_t max_size, absl::Time deadline);

// Accepts connections on a listening socket until destroyed and serves each on a thread of its
// own: `serve(fd)` reads and writes until the peer leaves or the fd is shut down, and the acceptor
// closes the fd after it returns (finished threads are joined at the next accept). Ownership: owns
// the listening socket. The destructor shuts down the listening socket and every connection, then
// joins every thread, so `serve` must return once its fd is shut down.
class ConnectionAcceptor {
 public:
  ConnectionAcceptor(int listen_fd, std::function<void(int fd)> serve);
  ~ConnectionAcceptor();
  ConnectionAcceptor(const ConnectionAcceptor&) = delete;
  ConnectionAcceptor& operator=(const ConnectionAcceptor&) = delete;

 private:
  struct Connection {
    int fd = -1;
    bool done = false;
    std::thread thread;
  };
  void AcceptLoop();

  const int listen_fd_;
  const std::function<void(int fd)> serve_;
  std::mutex mutex_;
  std::list<Connection> connections_;
  std::thread accept_thread_;
};

// Parses "host:port" or "[v6]:port".
absl::Status SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace reflect
