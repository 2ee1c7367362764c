// ParallelLayout and ReplicaGroup: where a rank sits in a TP × PP replica (DESIGN §1, §6).
//
// Global rank = stage * tensor_parallel + tp_rank; rank 0 (stage 0, tp_rank 0) is the leader.
// Stage s runs the contiguous layer range LayerRange(s) — layers split as evenly as possible,
// earlier stages taking the remainder one layer each.
#pragma once

#include <cstdint>
#include <memory>

#include "worker/parallel/communicator.h"

namespace reflect {

struct ParallelLayout {
  int tensor_parallel = 1;
  int pipeline_parallel = 1;
  int rank = 0;  // global rank in [0, world_size())

  int world_size() const { return tensor_parallel * pipeline_parallel; }
  int stage() const { return rank / tensor_parallel; }
  int tp_rank() const { return rank % tensor_parallel; }
  int GlobalRank(int stage, int tp_rank) const { return stage * tensor_parallel + tp_rank; }
  bool is_leader() const { return rank == 0; }
  bool is_first_stage() const { return stage() == 0; }
  bool is_last_stage() const { return stage() == pipeline_parallel - 1; }

  struct Layers {
    int64_t begin = 0;  // first layer of the stage
    int64_t end = 0;    // one past its last layer
  };
  Layers LayerRange(int stage, int64_t num_layers) const {
    const int64_t base = num_layers / pipeline_parallel;
    const int64_t extra = num_layers % pipeline_parallel;
    const int64_t begin = stage * base + (stage < extra ? stage : extra);
    return {begin, begin + base + (stage < extra ? 1 : 0)};
  }
};

// The communicators of one rank: `world` spans every rank of the replica (host memory, always
// Gloo or single-rank: step plans, activations between stages, logit shards to the leader);
// `tensor` spans the TP ranks of this rank's stage (backend memory: all-reduce, all-gather).
struct ReplicaGroup {
  ParallelLayout layout;
  std::unique_ptr<Communicator> world;
  std::unique_ptr<Communicator> tensor;
};

}  // namespace reflect
