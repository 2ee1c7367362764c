// The prefix cache index: chained block hash (kvcache/block_hash.h) → physical device block
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
// Ownership: owned by the BlockManager; holds no references (ref counts live in the
// BlockAllocator). Thread-safety: none. Cost: O(1) per call (hash map); memory O(blocks).
#pragma once

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

 private:
  bool Register(int32_t block, uint64_t hash, BlockState state);

  absl::flat_hash_map<uint64_t, int32_t> block_by_hash_;
  std::vector<BlockState> states_;  // per physical block
  std::vector<uint64_t> hashes_;    // per physical block; meaningful unless kUncached
};

}  // namespace reflect
