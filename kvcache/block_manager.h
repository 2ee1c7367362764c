// BlockManager: the paged KV cache's bookkeeping for one replica (DESIGN §5) — per-sequence
// block tables (logical → physical), ref-counted sharing, the prefix cache with LRU reuse of
// freed cached blocks, copy-on-write, and swap to a host block pool.
//
// Plan, then apply: MatchPrefix, CanAdmit, NumAppendableTokens, CanSwapOut and CanSwapIn never
// mutate; Admit, Append, MarkComputed, Fork, Free, SwapOut and SwapIn do, and refuse (with an
// error, changing nothing) when their plan no longer holds.
//
// Token accounting: a sequence's "slots" are the tokens whose KV is, or after the current step
// will be, in its blocks: Admit and Append reserve slots for the tokens the coming step runs;
// MarkComputed, called after the step, tells which of them the backend has written, which
// publishes their full blocks to the prefix cache. Block hashes come from the caller's
// BlockHashChain over the sequence's tokens (prompt then generated).
//
// Prefix cache: only full, computed blocks are shared. A hit adds a reference (or revives an
// evictable block). When a sequence frees a cached block and no one else references it, the
// block becomes evictable: it stays findable until the allocator needs it, least recently
// released first. A sequence frees its blocks last-to-first so a chain's tail is evicted
// before its head. Counters count tokens: prefix_cache_queried_tokens grows by the sequence's
// length at each admission, prefix_cache_hit_tokens by the tokens found cached.
// prefix_cache().ForEachComputedHash visits the hashes of every shareable block (in use or
// evictable), for the replica's PrefixCacheSummary.
//
// Ownership: owns its allocators and index; holds metadata only — the worker owns KV memory
// and performs the BlockCopy / BlockSwap operations returned here. Thread-safety: none (the
// engine loop's). Cost: queries and per-token growth are O(1) hash lookups plus O(blocks
// touched); Admit is O(blocks of the prompt); Free, SwapOut, SwapIn O(blocks of the sequence).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvcache/block_allocator.h"
#include "kvcache/block_operations.h"
#include "kvcache/prefix_cache.h"

namespace reflect {

struct BlockManagerConfig {
  int32_t block_size = 16;        // tokens per block
  int32_t num_device_blocks = 0;  // the KV pool on the accelerator (or CPU backend memory)
  int32_t num_host_blocks = 0;    // swap space; 0 disables swapping
  bool enable_prefix_caching = true;
};

// What the prefix cache holds of a sequence about to be admitted. Plain data from MatchPrefix.
struct PrefixMatch {
  int64_t num_tokens = 0;         // the queried sequence's length
  int32_t num_cached_blocks = 0;  // leading full blocks found computed in the cache
  int64_t num_cached_tokens = 0;  // num_cached_blocks * block size
  // Of the cached blocks, those no sequence references now: reviving them uses up blocks that
  // would otherwise be available.
  int32_t num_evictable_hits = 0;
  // The block after the hit is being computed by another sequence in the coming step:
  // admitting one step later shares it instead of computing it twice.
  bool waits_for_pending = false;
};

struct BlockManagerCounters {
  int64_t prefix_cache_queried_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t evicted_cached_blocks = 0;
  int64_t copy_on_write_blocks = 0;
  int64_t swapped_out_blocks = 0;
  int64_t swapped_in_blocks = 0;
};

class BlockManager {
 public:
  explicit BlockManager(const BlockManagerConfig& config);

  // ---- Queries (never mutate) ----

  // Leading full blocks of a `num_tokens`-token sequence found in the prefix cache. At least
  // one token is always left to compute (the step that samples needs the last token's
  // logits), so at most (num_tokens - 1) / block_size blocks match.
  PrefixMatch MatchPrefix(absl::Span<const uint64_t> block_hashes, int64_t num_tokens) const;
  // Whether Admit(match, num_new_tokens) would find enough blocks.
  bool CanAdmit(const PrefixMatch& match, int64_t num_new_tokens) const;
  // The largest n ≤ num_new_tokens for which Append(sequence, n) would find enough blocks
  // (counting a copy-on-write block); 0 for an unknown or swapped-out sequence.
  int64_t NumAppendableTokens(int64_t sequence_id, int64_t num_new_tokens) const;
  bool CanSwapOut(int64_t sequence_id) const;
  // Whether SwapIn, followed by Append(num_new_tokens), would find enough device blocks.
  bool CanSwapIn(int64_t sequence_id, int64_t num_new_tokens) const;

  // ---- Applies (mutate) ----

  // Starts a block table for a new sequence: shares match's cached blocks, then reserves
  // slots for num_new_tokens more. FAILED_PRECONDITION if the sequence exists or the match
  // is stale; RESOURCE_EXHAUSTED if the blocks are not there.
  absl::Status Admit(int64_t sequence_id, absl::Span<const uint64_t> block_hashes,
                     const PrefixMatch& match, int64_t num_new_tokens);
  // Reserves slots for num_new_tokens more tokens and returns the sequence's block table (valid
  // until the next mutation). When the last block is partial and shared (after Fork), it is
  // first copied to a private block; the copy is appended to `copies`.
  absl::StatusOr<absl::Span<const int32_t>> Append(int64_t sequence_id,
                                                   absl::Span<const uint64_t> block_hashes,
                                                   int64_t num_new_tokens,
                                                   std::vector<BlockCopy>& copies);
  // The backend has written KV for the first num_computed_tokens tokens: their full blocks
  // become shareable prefix-cache entries (unless the hash is already cached elsewhere).
  void MarkComputed(int64_t sequence_id, absl::Span<const uint64_t> block_hashes,
                    int64_t num_computed_tokens);
  // The child shares every block of the parent (n > 1 samples of one prompt).
  absl::Status Fork(int64_t parent_sequence_id, int64_t child_sequence_id);
  // Releases every block the sequence holds, on device or host; nothing for an unknown id.
  void Free(int64_t sequence_id);
  // Moves the sequence's blocks to host blocks; appends (device, host) pairs for the backend
  // to copy device → host before anything else in the step.
  absl::Status SwapOut(int64_t sequence_id, std::vector<BlockSwap>& swaps);
  // Moves a swapped-out sequence back to fresh device blocks; appends (device, host) pairs to
  // copy host → device.
  absl::Status SwapIn(int64_t sequence_id, std::vector<BlockSwap>& swaps);

  // ---- Views ----

  // Physical blocks for logical blocks 0, 1, ... (host blocks while swapped out); empty for an
  // unknown sequence.
  absl::Span<const int32_t> BlockTable(int64_t sequence_id) const;
  bool IsSwappedOut(int64_t sequence_id) const;
  int64_t NumSlots(int64_t sequence_id) const;

  int32_t block_size() const { return config_.block_size; }
  int32_t num_device_blocks() const { return device_blocks_.num_blocks(); }
  int32_t num_host_blocks() const { return host_blocks_.num_blocks(); }
  // used + cached + free = num_device_blocks.
  int32_t num_used_blocks() const;                                              // referenced
  int32_t num_cached_blocks() const { return device_blocks_.num_evictable(); }  // reusable
  int32_t num_free_blocks() const { return device_blocks_.num_free(); }         // empty
  int32_t num_free_host_blocks() const { return host_blocks_.num_free(); }
  const BlockManagerCounters& counters() const { return counters_; }
  const BlockAllocator& device_allocator() const { return device_blocks_; }
  const PrefixCache& prefix_cache() const { return prefix_cache_; }

  // Recounts every reference from the block tables and checks the allocators and the prefix
  // cache index against them. O(blocks); for tests and debugging.
  absl::Status CheckConsistency() const;

 private:
  struct SequenceBlocks {
    std::vector<int32_t> blocks;
    int64_t num_slots = 0;
    int32_t num_blocks_offered_to_cache = 0;  // logical blocks considered for RegisterPending
    int32_t num_blocks_marked_computed = 0;   // logical blocks MarkComputed has processed
    bool on_host = false;
  };

  int32_t BlocksFor(int64_t num_tokens) const;
  // Blocks Append(num_new_tokens) needs, copy-on-write included.
  int32_t BlocksToAppend(const SequenceBlocks& sequence, int64_t num_new_tokens) const;
  bool NeedsCopyOnWrite(const SequenceBlocks& sequence, int64_t num_new_tokens) const;
  int32_t AllocateDeviceBlock();
  void ReleaseDeviceBlock(int32_t block);
  void ReleaseAll(SequenceBlocks& sequence);
  void GrowSlots(SequenceBlocks& sequence, absl::Span<const uint64_t> block_hashes,
                 int64_t num_new_tokens);

  BlockManagerConfig config_;
  BlockAllocator device_blocks_;
  BlockAllocator host_blocks_;
  PrefixCache prefix_cache_;
  absl::flat_hash_map<int64_t, SequenceBlocks> sequences_;
  BlockManagerCounters counters_;
};

}  // namespace reflect
