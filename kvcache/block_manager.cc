#include "kvcache/block_manager.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace reflect {

BlockManager::BlockManager(const BlockManagerConfig& config)
    : config_(config),
      device_blocks_(config.num_device_blocks),
      host_blocks_(config.num_host_blocks),
      prefix_cache_(config.num_device_blocks) {
  assert(config.block_size > 0 && "KV block size must be positive");
}

int32_t BlockManager::BlocksFor(int64_t num_tokens) const {
  return static_cast<int32_t>((num_tokens + config_.block_size - 1) / config_.block_size);
}

bool BlockManager::NeedsCopyOnWrite(const SequenceBlocks& sequence, int64_t num_new_tokens) const {
  return num_new_tokens > 0 && sequence.num_slots % config_.block_size != 0 &&
         device_blocks_.ref_count(sequence.blocks.back()) > 1;
}

int32_t BlockManager::BlocksToAppend(const SequenceBlocks& sequence, int64_t num_new_tokens) const {
  const int32_t growth =
      BlocksFor(sequence.num_slots + num_new_tokens) - static_cast<int32_t>(sequence.blocks.size());
  return growth + (NeedsCopyOnWrite(sequence, num_new_tokens) ? 1 : 0);
}

int32_t BlockManager::num_used_blocks() const {
  return device_blocks_.num_blocks() - device_blocks_.num_available();
}

PrefixMatch BlockManager::MatchPrefix(absl::Span<const uint64_t> block_hashes,
                                      int64_t num_tokens) const {
  PrefixMatch match;
  match.num_tokens = num_tokens;
  if (!config_.enable_prefix_caching || num_tokens <= 0) return match;
  const int64_t max_blocks =
      std::min<int64_t>((num_tokens - 1) / config_.block_size, std::ssize(block_hashes));
  for (int64_t index = 0; index < max_blocks; ++index) {
    const int32_t block = prefix_cache_.Find(block_hashes[static_cast<size_t>(index)]);
    if (block < 0) break;
    if (prefix_cache_.state(block) == PrefixCache::BlockState::kPending) {
      match.waits_for_pending = true;
      break;
    }
    ++match.num_cached_blocks;
    if (device_blocks_.ref_count(block) == 0) ++match.num_evictable_hits;
  }
  match.num_cached_tokens = int64_t{match.num_cached_blocks} * config_.block_size;
  return match;
}

bool BlockManager::CanAdmit(const PrefixMatch& match, int64_t num_new_tokens) const {
  const int32_t new_blocks =
      BlocksFor(match.num_cached_tokens + num_new_tokens) - match.num_cached_blocks;
  return new_blocks + match.num_evictable_hits <= device_blocks_.num_available();
}

int64_t BlockManager::NumAppendableTokens(int64_t sequence_id, int64_t num_new_tokens) const {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end() || found->second.on_host || num_new_tokens <= 0) return 0;
  const SequenceBlocks& sequence = found->second;
  const int64_t available = device_blocks_.num_available();
  const int64_t copy_blocks = NeedsCopyOnWrite(sequence, num_new_tokens) ? 1 : 0;
  if (copy_blocks > available) return 0;
  const int64_t capacity = std::ssize(sequence.blocks) * config_.block_size - sequence.num_slots +
                           (available - copy_blocks) * config_.block_size;
  return std::min(num_new_tokens, capacity);
}

bool BlockManager::CanSwapOut(int64_t sequence_id) const {
  const auto found = sequences_.find(sequence_id);
  return found != sequences_.end() && !found->second.on_host &&
         std::ssize(found->second.blocks) <= host_blocks_.num_free();
}

bool BlockManager::CanSwapIn(int64_t sequence_id, int64_t num_new_tokens) const {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end() || !found->second.on_host) return false;
  const SequenceBlocks& sequence = found->second;
  const int32_t needed = std::max(BlocksFor(sequence.num_slots + num_new_tokens),
                                  static_cast<int32_t>(sequence.blocks.size()));
  return needed <= device_blocks_.num_available();
}

int32_t BlockManager::AllocateDeviceBlock() {
  absl::StatusOr<int32_t> block = device_blocks_.Allocate();
  assert(block.ok() && "the caller checked that a KV block is available");
  if (prefix_cache_.state(*block) != PrefixCache::BlockState::kUncached) {
    // Allocate evicted the least recently released cached block: its content is gone.
    prefix_cache_.Forget(*block);
    ++counters_.evicted_cached_blocks;
  }
  return *block;
}

void BlockManager::ReleaseDeviceBlock(int32_t block) {
  if (device_blocks_.ref_count(block) > 1) {
    device_blocks_.Release(block);
    return;
  }
  switch (prefix_cache_.state(block)) {
    case PrefixCache::BlockState::kComputed:
      device_blocks_.ReleaseToEvictable(block);
      return;
    case PrefixCache::BlockState::kPending:
      // Freed before the step that would have written it: nothing worth keeping.
      prefix_cache_.Forget(block);
      device_blocks_.Release(block);
      return;
    case PrefixCache::BlockState::kUncached:
      device_blocks_.Release(block);
      return;
  }
}

void BlockManager::ReleaseAll(SequenceBlocks& sequence) {
  // Last to first: a chain's tail becomes the least recently released, so it is evicted
  // before the head that more prompts share.
  for (auto block = sequence.blocks.rbegin(); block != sequence.blocks.rend(); ++block) {
    if (sequence.on_host) {
      host_blocks_.Release(*block);
    } else {
      ReleaseDeviceBlock(*block);
    }
  }
  sequence.blocks.clear();
}

void BlockManager::GrowSlots(SequenceBlocks& sequence, absl::Span<const uint64_t> block_hashes,
                             int64_t num_new_tokens) {
  sequence.num_slots += num_new_tokens;
  const int32_t needed = BlocksFor(sequence.num_slots);
  while (std::ssize(sequence.blocks) < needed) sequence.blocks.push_back(AllocateDeviceBlock());
  if (!config_.enable_prefix_caching) return;
  // Blocks the coming step fills are announced as pending, so that a sequence admitted in the
  // same step with the same prefix waits for them instead of computing them again.
  const auto full_blocks = static_cast<int32_t>(
      std::min<int64_t>(sequence.num_slots / config_.block_size, std::ssize(block_hashes)));
  for (int32_t index = sequence.num_blocks_offered_to_cache; index < full_blocks; ++index) {
    const int32_t block = sequence.blocks[static_cast<size_t>(index)];
    if (prefix_cache_.state(block) == PrefixCache::BlockState::kUncached) {
      prefix_cache_.RegisterPending(block, block_hashes[static_cast<size_t>(index)]);
    }
  }
  sequence.num_blocks_offered_to_cache =
      std::max(sequence.num_blocks_offered_to_cache, full_blocks);
}

absl::Status BlockManager::Admit(int64_t sequence_id, absl::Span<const uint64_t> block_hashes,
                                 const PrefixMatch& match, int64_t num_new_tokens) {
  if (sequences_.contains(sequence_id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", sequence_id, " already has KV blocks"));
  }
  const PrefixMatch current = MatchPrefix(block_hashes, match.num_tokens);
  if (current.num_cached_blocks != match.num_cached_blocks) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stale prefix match for sequence ", sequence_id, ": planned ", match.num_cached_blocks,
        " cached blocks, the cache now holds ", current.num_cached_blocks));
  }
  if (!CanAdmit(current, num_new_tokens)) {
    return absl::ResourceExhaustedError(absl::StrCat("not enough free KV blocks to admit sequence ",
                                                     sequence_id, " with ", num_new_tokens,
                                                     " new tokens"));
  }
  SequenceBlocks& sequence = sequences_[sequence_id];
  sequence.blocks.reserve(static_cast<size_t>(BlocksFor(match.num_tokens)));
  for (int32_t index = 0; index < current.num_cached_blocks; ++index) {
    const int32_t block = prefix_cache_.Find(block_hashes[static_cast<size_t>(index)]);
    if (device_blocks_.is_evictable(block)) {
      device_blocks_.ReviveEvictable(block);
    } else {
      device_blocks_.AddReference(block);
    }
    sequence.blocks.push_back(block);
  }
  sequence.num_slots = current.num_cached_tokens;
  sequence.num_blocks_offered_to_cache = current.num_cached_blocks;
  sequence.num_blocks_marked_computed = current.num_cached_blocks;
  GrowSlots(sequence, block_hashes, num_new_tokens);
  counters_.prefix_cache_queried_tokens += match.num_tokens;
  counters_.prefix_cache_hit_tokens += current.num_cached_tokens;
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const int32_t>> BlockManager::Append(
    int64_t sequence_id, absl::Span<const uint64_t> block_hashes, int64_t num_new_tokens,
    std::vector<BlockCopy>& copies) {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end() || found->second.on_host) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", sequence_id, " has no KV blocks on the device"));
  }
  SequenceBlocks& sequence = found->second;
  if (num_new_tokens <= 0) return absl::Span<const int32_t>(sequence.blocks);
  if (BlocksToAppend(sequence, num_new_tokens) > device_blocks_.num_available()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough free KV blocks for ", num_new_tokens, " tokens of sequence ", sequence_id));
  }
  if (NeedsCopyOnWrite(sequence, num_new_tokens)) {
    const int32_t shared = sequence.blocks.back();
    const int32_t private_copy = AllocateDeviceBlock();
    copies.push_back(BlockCopy{.source_block = shared, .destination_block = private_copy});
    ReleaseDeviceBlock(shared);
    sequence.blocks.back() = private_copy;
    ++counters_.copy_on_write_blocks;
  }
  GrowSlots(sequence, block_hashes, num_new_tokens);
  return absl::Span<const int32_t>(sequence.blocks);
}

void BlockManager::MarkComputed(int64_t sequence_id, absl::Span<const uint64_t> block_hashes,
                                int64_t num_computed_tokens) {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end() || found->second.on_host) return;
  SequenceBlocks& sequence = found->second;
  const auto full_blocks =
      static_cast<int32_t>(std::min(num_computed_tokens, sequence.num_slots) / config_.block_size);
  for (int32_t index = sequence.num_blocks_marked_computed; index < full_blocks; ++index) {
    const int32_t block = sequence.blocks[static_cast<size_t>(index)];
    if (prefix_cache_.state(block) == PrefixCache::BlockState::kPending) {
      prefix_cache_.MarkComputed(block);
    } else if (prefix_cache_.state(block) == PrefixCache::BlockState::kUncached &&
               config_.enable_prefix_caching && index < std::ssize(block_hashes)) {
      prefix_cache_.RegisterComputed(block, block_hashes[static_cast<size_t>(index)]);
    }
  }
  sequence.num_blocks_marked_computed = std::max(sequence.num_blocks_marked_computed, full_blocks);
}

absl::Status BlockManager::Fork(int64_t parent_sequence_id, int64_t child_sequence_id) {
  const auto parent = sequences_.find(parent_sequence_id);
  if (parent == sequences_.end() || parent->second.on_host) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot fork sequence ", parent_sequence_id, ": no KV blocks on the device"));
  }
  if (sequences_.contains(child_sequence_id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", child_sequence_id, " already has KV blocks"));
  }
  SequenceBlocks child = parent->second;
  for (const int32_t block : child.blocks) device_blocks_.AddReference(block);
  sequences_.emplace(child_sequence_id, std::move(child));
  return absl::OkStatus();
}

void BlockManager::Free(int64_t sequence_id) {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end()) return;
  ReleaseAll(found->second);
  sequences_.erase(found);
}

absl::Status BlockManager::SwapOut(int64_t sequence_id, std::vector<BlockSwap>& swaps) {
  if (!CanSwapOut(sequence_id)) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot swap out sequence ", sequence_id,
                                                     ": not on the device or host space is short"));
  }
  SequenceBlocks& sequence = sequences_.find(sequence_id)->second;
  std::vector<int32_t> host_table;
  host_table.reserve(sequence.blocks.size());
  for (const int32_t device_block : sequence.blocks) {
    const int32_t host_block = *host_blocks_.Allocate();
    swaps.push_back(BlockSwap{.device_block = device_block, .host_block = host_block});
    host_table.push_back(host_block);
  }
  ReleaseAll(sequence);
  sequence.blocks = std::move(host_table);
  sequence.on_host = true;
  counters_.swapped_out_blocks += std::ssize(sequence.blocks);
  return absl::OkStatus();
}

absl::Status BlockManager::SwapIn(int64_t sequence_id, std::vector<BlockSwap>& swaps) {
  if (!CanSwapIn(sequence_id, 0)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot swap in sequence ", sequence_id, ": not swapped out or device blocks are short"));
  }
  SequenceBlocks& sequence = sequences_.find(sequence_id)->second;
  std::vector<int32_t> device_table;
  device_table.reserve(sequence.blocks.size());
  for (const int32_t host_block : sequence.blocks) {
    const int32_t device_block = AllocateDeviceBlock();
    swaps.push_back(BlockSwap{.device_block = device_block, .host_block = host_block});
    device_table.push_back(device_block);
  }
  ReleaseAll(sequence);
  sequence.blocks = std::move(device_table);
  sequence.on_host = false;
  // The fresh device blocks are published to the prefix cache again by the next MarkComputed.
  sequence.num_blocks_marked_computed = 0;
  counters_.swapped_in_blocks += std::ssize(sequence.blocks);
  return absl::OkStatus();
}

absl::Span<const int32_t> BlockManager::BlockTable(int64_t sequence_id) const {
  const auto found = sequences_.find(sequence_id);
  if (found == sequences_.end()) return {};
  return found->second.blocks;
}

bool BlockManager::IsSwappedOut(int64_t sequence_id) const {
  const auto found = sequences_.find(sequence_id);
  return found != sequences_.end() && found->second.on_host;
}

int64_t BlockManager::NumSlots(int64_t sequence_id) const {
  const auto found = sequences_.find(sequence_id);
  return found == sequences_.end() ? 0 : found->second.num_slots;
}

absl::Status BlockManager::CheckConsistency() const {
  std::vector<int32_t> device_references(static_cast<size_t>(device_blocks_.num_blocks()), 0);
  std::vector<int32_t> host_references(static_cast<size_t>(host_blocks_.num_blocks()), 0);
  for (const auto& [sequence_id, sequence] : sequences_) {
    std::vector<int32_t>& references = sequence.on_host ? host_references : device_references;
    if (BlocksFor(sequence.num_slots) != std::ssize(sequence.blocks)) {
      return absl::InternalError(absl::StrCat("sequence ", sequence_id, " holds ",
                                              sequence.blocks.size(), " blocks for ",
                                              sequence.num_slots, " slots"));
    }
    for (const int32_t block : sequence.blocks) {
      if (block < 0 || block >= std::ssize(references)) {
        return absl::InternalError(
            absl::StrCat("sequence ", sequence_id, " holds unknown block ", block));
      }
      ++references[static_cast<size_t>(block)];
    }
  }
  int32_t free_blocks = 0;
  int32_t indexed_blocks = 0;
  int64_t computed_blocks = 0;
  for (int32_t block = 0; block < device_blocks_.num_blocks(); ++block) {
    const int32_t count = device_blocks_.ref_count(block);
    if (count != device_references[static_cast<size_t>(block)]) {
      return absl::InternalError(
          absl::StrCat("device block ", block, " has ref count ", count, " but ",
                       device_references[static_cast<size_t>(block)], " references"));
    }
    const PrefixCache::BlockState state = prefix_cache_.state(block);
    const bool evictable = device_blocks_.is_evictable(block);
    if (evictable != (count == 0 && state == PrefixCache::BlockState::kComputed)) {
      return absl::InternalError(absl::StrCat("device block ", block,
                                              " is evictable exactly when it is an unreferenced "
                                              "computed cache entry; it is not"));
    }
    if (count == 0 && state == PrefixCache::BlockState::kPending) {
      return absl::InternalError(absl::StrCat("pending block ", block, " is unreferenced"));
    }
    if (count == 0 && !evictable) ++free_blocks;
    if (state == PrefixCache::BlockState::kComputed) ++computed_blocks;
    if (state != PrefixCache::BlockState::kUncached) {
      ++indexed_blocks;
      if (prefix_cache_.Find(prefix_cache_.hash(block)) != block) {
        return absl::InternalError(absl::StrCat("block ", block, " is not indexed by its hash"));
      }
    }
  }
  if (free_blocks != device_blocks_.num_free() || indexed_blocks != prefix_cache_.num_entries()) {
    return absl::InternalError("free stack or prefix index size disagrees with the blocks");
  }
  if (computed_blocks != prefix_cache_.num_computed()) {
    return absl::InternalError("the prefix cache's computed count disagrees with the blocks");
  }
  int32_t free_host_blocks = 0;
  for (int32_t block = 0; block < host_blocks_.num_blocks(); ++block) {
    if (host_blocks_.ref_count(block) != host_references[static_cast<size_t>(block)]) {
      return absl::InternalError(absl::StrCat("host block ", block, " has a wrong ref count"));
    }
    if (host_references[static_cast<size_t>(block)] == 0) ++free_host_blocks;
  }
  if (free_host_blocks != host_blocks_.num_free()) {
    return absl::InternalError("host free count disagrees with the blocks");
  }
  return absl::OkStatus();
}

}  // namespace reflect
