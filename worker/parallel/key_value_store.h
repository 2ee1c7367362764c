// KeyValueStore: the rendezvous of a replica group (issue #4). The leader serves one over TCP;
// every rank (the leader included) reaches it through a client. Gloo's pair addresses and NCCL's
// unique id are exchanged through it, under a per-group key prefix.
//
// Contract: Set never overwrites silently (a second Set of a key replaces the value; callers use
// distinct keys); Get waits until the key exists or `timeout` passes (DEADLINE_EXCEEDED, naming
// the key). Thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reflect {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) = 0;
};

}  // namespace reflect
