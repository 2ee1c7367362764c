// SingleRankCommunicator: the group of one rank (no tensor or pipeline parallelism). Collectives
// leave the data as it is; AllGather copies input to output with memmove, so it needs host memory
// (a device backend skips collectives on a group of size 1). There is no peer: Send and Recv
// answer INVALID_ARGUMENT. Never breaks. Thread-safety: stateless, any thread. Cost: AllGather
// copies `count` floats, the rest nothing.
#pragma once

#include "worker/parallel/communicator.h"

namespace reflect {

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float* data, int64_t count) override;
  absl::Status AllGather(const float* input, int64_t count, float* output) override;
  absl::Status Broadcast(void* data, int64_t bytes, int root, absl::Duration timeout) override;
  absl::Status Send(const void* data, int64_t bytes, int peer) override;
  absl::Status Recv(void* data, int64_t bytes, int peer, absl::Duration timeout) override;
};

}  // namespace reflect
