#include "kvcache/prefix_cache.h"

#include <cassert>

namespace reflect {

PrefixCache::PrefixCache(int32_t num_blocks)
    : states_(static_cast<size_t>(num_blocks > 0 ? num_blocks : 0), BlockState::kUncached),
      hashes_(states_.size(), 0) {}

int32_t PrefixCache::Find(uint64_t hash) const {
  const auto found = block_by_hash_.find(hash);
  return found == block_by_hash_.end() ? -1 : found->second;
}

bool PrefixCache::Register(int32_t block, uint64_t hash, BlockState state) {
  const auto index = static_cast<size_t>(block);
  assert(states_[index] == BlockState::kUncached && "KV block registered twice");
  if (states_[index] != BlockState::kUncached) return false;
  if (!block_by_hash_.try_emplace(hash, block).second) return false;
  states_[index] = state;
  hashes_[index] = hash;
  if (state == BlockState::kComputed) ComputedSetChanged(+1);
  return true;
}

void PrefixCache::ComputedSetChanged(int64_t delta) {
  num_computed_ += delta;
  ++computed_version_;
}

bool PrefixCache::RegisterPending(int32_t block, uint64_t hash) {
  return Register(block, hash, BlockState::kPending);
}

bool PrefixCache::RegisterComputed(int32_t block, uint64_t hash) {
  return Register(block, hash, BlockState::kComputed);
}

void PrefixCache::MarkComputed(int32_t block) {
  const auto index = static_cast<size_t>(block);
  if (states_[index] != BlockState::kPending) return;
  states_[index] = BlockState::kComputed;
  ComputedSetChanged(+1);
}

void PrefixCache::Forget(int32_t block) {
  const auto index = static_cast<size_t>(block);
  if (states_[index] == BlockState::kUncached) return;
  block_by_hash_.erase(hashes_[index]);
  if (states_[index] == BlockState::kComputed) ComputedSetChanged(-1);
  states_[index] = BlockState::kUncached;
}

}  // namespace reflect
