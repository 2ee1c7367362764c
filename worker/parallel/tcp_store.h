// The replica group's rendezvous over TCP (issue #4): the leader (rank 0) serves a key-value store
// on the rendezvous port; every rank, the leader included, reaches it through a TcpStoreClient.
//
// Protocol: each request and reply is a frame (4-byte big-endian length, then the payload; at most
// 1 MiB). Requests: 'S' u32 key length, key, value → reply 'K'; 'G' i64 timeout in milliseconds
// (-1: none), key → reply 'K' value, or 'T' when the key did not appear in time. A malformed or
// oversized frame makes the server drop that connection; it never stops the server.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/key_value_store.h"
#include "worker/parallel/socket_io.h"

namespace reflect {

// Serves the store until destroyed. Ownership: owns its sockets and threads (one accepting, one
// per connection: fine for the ≤ 64 ranks of a replica). Thread-safety: port() from any thread;
// the destructor closes every connection and wakes waiting Gets (their clients see UNAVAILABLE).
class TcpStoreServer {
 public:
  // Listens on host:port (port 0: any free port; host "0.0.0.0" or "::" for every interface).
  static absl::StatusOr<std::unique_ptr<TcpStoreServer>> Start(const std::string& host, int port);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const { return port_; }

 private:
  TcpStoreServer(int listen_fd, int port);
  void Serve(int fd);
  // The reply to one request, or an empty string for a malformed one.
  std::string Handle(const std::string& request);

  const int port_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::map<std::string, std::string> values_;
  std::unique_ptr<ConnectionAcceptor> acceptor_;  // last: its threads use the members above
};

// A KeyValueStore on a TcpStoreServer. Thread-safety: any thread; each concurrent call uses a
// connection of its own (kept for reuse), so a waiting Get never holds up a Set. Cost: one round
// trip per call. A lost server shows as UNAVAILABLE.
class TcpStoreClient : public KeyValueStore {
 public:
  // Connects to host:port, retrying until `connect_timeout` passes (a follower may start before
  // its leader): UNAVAILABLE "could not reach replica leader at host:port within N s".
  static absl::StatusOr<std::unique_ptr<TcpStoreClient>> Connect(const std::string& host, int port,
                                                                 absl::Duration connect_timeout);
  ~TcpStoreClient() override;

  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;

 private:
  TcpStoreClient(std::string host, int port, absl::Duration connect_timeout, int fd);
  // Sends `request` and reads the reply on an idle connection (or a new one).
  absl::StatusOr<std::string> Call(const std::string& request, absl::Time reply_deadline);

  const std::string host_;
  const int port_;
  const absl::Duration connect_timeout_;
  std::mutex mutex_;
  std::vector<int> idle_fds_;
};

}  // namespace reflect
