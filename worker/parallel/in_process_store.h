// InProcessStore: a KeyValueStore in memory, for ranks that are threads of one process (tests,
// benchmarks). Separate processes rendezvous through TcpStoreServer / TcpStoreClient instead.
//
// Thread-safety: every method may be called from any thread; Get waits on a condition variable
// that each Set wakes. Cost: O(log keys) per call; values are copied.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "worker/parallel/key_value_store.h"

namespace reflect {

class InProcessStore : public KeyValueStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
};

}  // namespace reflect
