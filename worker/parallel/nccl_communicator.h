// NCCL communicator: a Communicator over NCCL for device memory (DESIGN §1, §6): the tensor groups
// of CUDA replicas. Built only with CUDA and NCCL (REFLECT_WITH_NCCL).
//
// Rendezvous: rank 0 of the group creates the NCCL unique id and publishes it in the KeyValueStore
// under "nccl/<group_name>/id"; every rank initializes its communicator on the calling thread's
// current CUDA device (cudaSetDevice first), non-blocking, so initialization is bounded too.
//
// Every call enqueues on a stream of the communicator's own and waits for it, polling NCCL's
// asynchronous error; past its timeout (or on an NCCL error) the communicator is aborted
// (ncclCommAbort) and broken, and every later call fails fast. Results are identical bits on every
// rank (NCCL reduces once and distributes the result), but NCCL picks the summation order by
// message size and topology, so unlike Gloo the bits may depend on `count`.
// Thread-safety: one caller at a time. Cost: one stream synchronization per call.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator.h"
#include "worker/parallel/key_value_store.h"

namespace reflect {

// Joins group `group_name` of `size` ranks as `rank` within `timeout`, which also bounds
// AllReduceSum, AllGather and Send (Broadcast and Recv take their own).
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    std::shared_ptr<KeyValueStore> store, const std::string& group_name, int rank, int size,
    absl::Duration timeout);

}  // namespace reflect
