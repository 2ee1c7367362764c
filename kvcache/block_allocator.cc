#include "kvcache/block_allocator.h"

#include <cassert>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace reflect {
namespace {

bool InRange(int32_t block, size_t num_blocks) {
  return block >= 0 && static_cast<size_t>(block) < num_blocks;
}

}  // namespace

BlockAllocator::BlockAllocator(int32_t num_blocks)
    : ref_counts_(static_cast<size_t>(num_blocks > 0 ? num_blocks : 0), 0),
      next_(ref_counts_.size() + 1),
      previous_(ref_counts_.size() + 1) {
  // Pushed in reverse so that a fresh pool hands out 0, 1, 2, ...: block tables in tests and
  // traces read naturally.
  free_blocks_.reserve(ref_counts_.size());
  for (int32_t block = num_blocks - 1; block >= 0; --block) free_blocks_.push_back(block);
  for (size_t index = 0; index < next_.size(); ++index) {
    next_[index] = static_cast<int32_t>(index);
    previous_[index] = static_cast<int32_t>(index);
  }
}

bool BlockAllocator::is_evictable(int32_t block) const {
  return InRange(block, ref_counts_.size()) && next_[static_cast<size_t>(block)] != block;
}

void BlockAllocator::UnlinkEvictable(int32_t block) {
  const auto index = static_cast<size_t>(block);
  next_[static_cast<size_t>(previous_[index])] = next_[index];
  previous_[static_cast<size_t>(next_[index])] = previous_[index];
  next_[index] = block;
  previous_[index] = block;
  --num_evictable_;
}

absl::StatusOr<int32_t> BlockAllocator::Allocate() {
  int32_t block = 0;
  if (!free_blocks_.empty()) {
    block = free_blocks_.back();
    free_blocks_.pop_back();
  } else if (num_evictable_ > 0) {
    block = next_[ref_counts_.size()];
    UnlinkEvictable(block);
  } else {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", ref_counts_.size(), " KV cache blocks are in use"));
  }
  ref_counts_[static_cast<size_t>(block)] = 1;
  return block;
}

// Referencing or releasing a block that is not in use is a bug in the caller, never bad input:
// debug builds stop at the assert; release builds ignore the call, which keeps the free stack
// and the counts consistent (no block can end up free twice or negative).
void BlockAllocator::AddReference(int32_t block) {
  const bool in_use = InRange(block, ref_counts_.size()) && ref_counts_[block] > 0;
  assert(in_use && "AddReference on a free or unknown KV block");
  if (!in_use) return;
  ++ref_counts_[static_cast<size_t>(block)];
}

void BlockAllocator::Release(int32_t block) {
  const bool in_use = InRange(block, ref_counts_.size()) && ref_counts_[block] > 0;
  assert(in_use && "Release of a free or unknown KV block");
  if (!in_use) return;
  if (--ref_counts_[static_cast<size_t>(block)] == 0) free_blocks_.push_back(block);
}

void BlockAllocator::ReleaseToEvictable(int32_t block) {
  const bool in_use = InRange(block, ref_counts_.size()) && ref_counts_[block] > 0;
  assert(in_use && "ReleaseToEvictable of a free or unknown KV block");
  if (!in_use) return;
  if (--ref_counts_[static_cast<size_t>(block)] > 0) return;
  // Link in as the most recently released block (just before the sentinel).
  const auto sentinel = static_cast<int32_t>(ref_counts_.size());
  const int32_t last = previous_[static_cast<size_t>(sentinel)];
  next_[static_cast<size_t>(last)] = block;
  previous_[static_cast<size_t>(block)] = last;
  next_[static_cast<size_t>(block)] = sentinel;
  previous_[static_cast<size_t>(sentinel)] = block;
  ++num_evictable_;
}

void BlockAllocator::ReviveEvictable(int32_t block) {
  const bool evictable = is_evictable(block);
  assert(evictable && "ReviveEvictable of a KV block that is not evictable");
  if (!evictable) return;
  UnlinkEvictable(block);
  ref_counts_[static_cast<size_t>(block)] = 1;
}

std::vector<int32_t> BlockAllocator::EvictableInLruOrder() const {
  std::vector<int32_t> blocks;
  blocks.reserve(static_cast<size_t>(num_evictable_));
  const auto sentinel = static_cast<int32_t>(ref_counts_.size());
  for (int32_t block = next_[static_cast<size_t>(sentinel)]; block != sentinel;
       block = next_[static_cast<size_t>(block)]) {
    blocks.push_back(block);
  }
  return blocks;
}

}  // namespace reflect
