// The prefix cache index: chained block hash (common/block_hash.h) → physical device block
// holding that prefix's KV, plus each block's cache state (DESIGN §5).
//
// A block is entered as kPending when a sequence allocates it for tokens the coming step
// computes; lookups do not share pending blocks (their KV is not written yet) but can see that
// the content is on its way and wait a step instead of computing it a second time. After the
// step, kPending becomes kComputed and lookups share the block. An entry leaves the index when
// its block is evicted for reuse, or when a pending block is freed before it was computed.
//
//   kUncached ──RegisterPending──▶ kPending ──MarkComputed──▶ kComputed
//       ▲  └────────RegisterComputed──────────────────────────────┘ │
//       └────────────────────────── Forget ◀────────────────────────┘ (also from kPending)
//
// For the replica's PrefixCacheSummary (common/prefix_summary.h), ForEachComputedHash visits
// what a new request could share, and computed_version tells whether that set changed since the
// last visit, so an unchanged cache is never summarized twice.
//
// Ownership: owned by the BlockManager; holds no references (ref counts live in the
// BlockAllocator). Thread-safety: none. Cost: O(1) per call (hash map) except
// ForEachComputedHash, O(physical blocks) over two flat arrays; memory O(blocks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace reflect {

class PrefixCache {
 public:
  enum class BlockState : uint8_t { kUncached, kPending, kComputed };

  explicit PrefixCache(int32_t num_blocks);

  // The block registered under `hash`, or -1.
  int32_t Find(uint64_t hash) const;
  // Enters an uncached block under `hash` unless another block already holds that hash.
  // Returns whether it was entered.
  bool RegisterPending(int32_t block, uint64_t hash);
  bool RegisterComputed(int32_t block, uint64_t hash);
  // kPending → kComputed; any other state is left alone.
  void MarkComputed(int32_t block);
  // Drops the block's entry (no-op for an uncached block).
  void Forget(int32_t block);

  BlockState state(int32_t block) const { return states_[static_cast<size_t>(block)]; }
  uint64_t hash(int32_t block) const { return hashes_[static_cast<size_t>(block)]; }
  int64_t num_entries() const { return static_cast<int64_t>(block_by_hash_.size()); }
  // Entries in kComputed: the blocks a lookup shares.
  int64_t num_computed() const { return num_computed_; }
  // Changes whenever the set of kComputed entries does (never repeats a value).
  uint64_t computed_version() const { return computed_version_; }

  // Calls visit(hash) once for every kComputed entry, in physical block order. Read-only and
  // allocation-free: a scan of the per-block arrays, which are contiguous.
  template <typename Visitor>
  void ForEachComputedHash(Visitor&& visit) const {
    for (size_t block = 0; block < states_.size(); ++block) {
      if (states_[block] == BlockState::kComputed) visit(hashes_[block]);
    }
  }

 private:
  bool Register(int32_t block, uint64_t hash, BlockState state);
  void ComputedSetChanged(int64_t delta);

  absl::flat_hash_map<uint64_t, int32_t> block_by_hash_;
  std::vector<BlockState> states_;  // per physical block
  std::vector<uint64_t> hashes_;    // per physical block; meaningful unless kUncached
  int64_t num_computed_ = 0;
  uint64_t computed_version_ = 0;
};

}  // namespace reflect
