// A pool of fixed-size KV blocks: hands out free physical block ids and counts references.
// Metadata only; the backend owns the memory (DESIGN §5). The prefix cache, copy-on-write and
// swap bookkeeping build on this.
//
// Every block is in exactly one of three states:
//   free       ref count 0, content meaningless, on the free stack;
//   in use     ref count > 0;
//   evictable  ref count 0, content worth keeping (a prefix-cached block), on an LRU list.
// Allocate takes a free block first and evicts the least recently released evictable block only
// when no free block is left; the caller learns which content it lost from its own records.
//
// Thread-safety: none; owned by the engine loop. Cost: every operation is O(1).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace reflect {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  // A free block with ref count 1; when none is free, the least recently released evictable
  // block (ref count 1 again); RESOURCE_EXHAUSTED when neither exists.
  absl::StatusOr<int32_t> Allocate();
  // Adds a reference to a block in use (sharing).
  void AddReference(int32_t block);
  // Drops one reference; the block is free again at zero.
  //
  // AddReference, Release, ReleaseToEvictable or ReviveEvictable on a block in the wrong state
  // (or out of range) is a programmer error: an assert fires in debug builds; release builds
  // (NDEBUG) ignore the call, so the pool stays consistent (no block freed twice, no negative
  // count).
  void Release(int32_t block);
  // Drops one reference; at zero the block becomes the most recently released evictable block.
  void ReleaseToEvictable(int32_t block);
  // Takes an evictable block back into use with ref count 1 (a prefix-cache hit).
  void ReviveEvictable(int32_t block);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_blocks_.size()); }
  int32_t num_evictable() const { return num_evictable_; }
  // Blocks Allocate can still hand out: free plus evictable.
  int32_t num_available() const { return num_free() + num_evictable_; }
  int32_t ref_count(int32_t block) const { return ref_counts_[block]; }
  bool is_evictable(int32_t block) const;
  // Evictable blocks from least to most recently released (the order Allocate evicts them in).
  // O(evictable blocks); for tests and metrics dumps.
  std::vector<int32_t> EvictableInLruOrder() const;

 private:
  void UnlinkEvictable(int32_t block);

  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_blocks_;  // a stack: the most recently freed block is reused first
  // Doubly linked LRU list of evictable blocks over indices 0..n-1, with index n as the
  // sentinel: next_[n] is the least recently released block, previous_[n] the most recent.
  // A block not on the list links to itself.
  std::vector<int32_t> next_;
  std::vector<int32_t> previous_;
  int32_t num_evictable_ = 0;
};

}  // namespace reflect
