// A pool of fixed-size KV blocks: hands out free physical block ids and counts references.
// Metadata only; the backend owns the memory (DESIGN §5). The prefix cache, copy-on-write and
// swap bookkeeping build on this.
//
// Thread-safety: none; owned by the engine loop.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace reflect {

class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  // A free block with ref count 1, or RESOURCE_EXHAUSTED.
  absl::StatusOr<int32_t> Allocate();
  // Adds a reference to a block in use (sharing).
  void AddReference(int32_t block);
  // Drops one reference; the block is free again at zero.
  void Release(int32_t block);

  int32_t num_blocks() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_blocks_.size()); }
  int32_t ref_count(int32_t block) const { return ref_counts_[block]; }

 private:
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_blocks_;  // a stack: the most recently freed block is reused first
};

}  // namespace reflect
