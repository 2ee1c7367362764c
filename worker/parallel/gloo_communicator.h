// Gloo communicator: a Communicator over libgloo's TCP transport, for host memory (DESIGN §1, §6).
// Every replica's world group uses it, and the tensor groups of CPU replicas.
//
// Rendezvous: each rank creates a TCP device bound to `hostname`, publishes its pair addresses in
// the KeyValueStore under "gloo/<group_name>/<rank>" and connects a full mesh to the others.
// Group names must be unique for the life of a store (a stale address from an earlier group of
// the same name would be dialed).
//
// AllReduceSum sums every element in rank order 0, 1, …, size-1 on whichever rank owns it, then
// shares the bits, so results are identical on every rank and do not depend on `count` (batch
// invariance, DESIGN §6). Small reductions gather every rank's input and sum locally (one round,
// (size-1)·count floats received); large ones scatter chunks to their owners, sum, and gather the
// chunks back (2·(size-1)/size·count floats received, like a ring).
//
// Timeouts: collectives and Send wait at most `timeout`; Broadcast and Recv at most their argument
// (absl::InfiniteDuration() becomes ten years). A peer that closes its connection fails the
// pending call at once with UNAVAILABLE.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/parallel/communicator.h"
#include "worker/parallel/key_value_store.h"

namespace reflect {

struct GlooOptions {
  // The address this rank listens on for its peers: one they can reach (the pod IP on Kubernetes).
  std::string hostname = "127.0.0.1";
  // Bounds the whole rendezvous (every rank must have joined within it) and each collective.
  absl::Duration timeout = absl::Seconds(30);
};

// Joins group `group_name` of `size` ranks as `rank`; returns once every rank has joined, or
// DEADLINE_EXCEEDED naming a rank that did not join within options.timeout. `store` is only used
// during the call.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    std::shared_ptr<KeyValueStore> store, const std::string& group_name, int rank, int size,
    const GlooOptions& options);

}  // namespace reflect
