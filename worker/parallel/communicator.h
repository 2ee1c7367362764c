// Communicator: collectives and point-to-point messages among the ranks of one group (DESIGN §3).
//
// A replica of TP × PP ranks holds two kinds of group: its world (every rank: step plans from the
// leader, pipeline activations, logit shards to the leader) and one tensor group per pipeline
// stage (the TP ranks of that stage: all-reduce, all-gather). Global rank = stage * tp + tp_rank;
// rank 0 is the replica leader.
//
// Buffers live in the implementation's memory space: host memory for Gloo and single-rank, device
// memory for NCCL. Control traffic (step plans) always goes over a host (Gloo) world group.
//
// Contract: every rank of a group calls the same collectives in the same order with the same
// sizes; Send on one rank pairs with Recv on its peer, in order. Results are identical bits on
// every rank (all-reduce sums each element in one order fixed by the group, independent of
// batch size). Errors — a peer gone, a timeout — come back as UNAVAILABLE or DEADLINE_EXCEEDED;
// after one the communicator is broken and every later call fails fast with the same error.
// Thread-safety: one caller at a time.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace reflect {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // in [0, size())
  virtual int size() const = 0;

  // data[i] = sum over ranks of data[i], for i in [0, count).
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  // output[r * count + i] = input[i] of rank r; output holds size() * count floats.
  virtual absl::Status AllGather(const float* input, int64_t count, float* output) = 0;
  // Copies `bytes` bytes of `root`'s data to every other rank's data. `timeout` bounds the wait
  // (a follower waiting for the next step plan passes absl::InfiniteDuration()).
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root, absl::Duration timeout) = 0;
  // Point to point, in order per (sender, receiver) pair; Recv waits at most `timeout`. Send may
  // wait for the peer's matching Recv (Gloo always does, up to its group timeout), so two ranks
  // must not both Send to each other before either Receives.
  virtual absl::Status Send(const void* data, int64_t bytes, int peer) = 0;
  virtual absl::Status Recv(void* data, int64_t bytes, int peer, absl::Duration timeout) = 0;
};

}  // namespace reflect
