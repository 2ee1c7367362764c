// Chained content hashes of full KV blocks, the keys of the prefix cache (DESIGN §5).
//
// The hash of logical block i is Hash(hash of block i-1, the block's token ids), with a fixed
// root for block 0, so equal hashes mean equal whole prefixes, not just equal blocks. Only full
// blocks get a hash. The function is fixed (not seeded per process): the same prompt hashes the
// same way in every replica and every run. It is 64 bits wide and not verified against the
// tokens: two different prefixes collide with probability about 2^-64 per pair.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace reflect {

// The parent hash of block 0: any fixed value.
inline constexpr uint64_t kRootBlockHash = 0x9ae16a3b2f90404fULL;

// The hash of one full block given its parent's hash. O(tokens).
uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens);

// The hashes of every full block of a growing token sequence, extended incrementally.
//
// Ownership: a plain value held by the sequence. Thread-safety: none. Cost: Extend is O(new
// tokens), amortized; memory is 8 bytes per full block.
class BlockHashChain {
 public:
  explicit BlockHashChain(int32_t block_size) : block_size_(block_size) {}

  // Hashes the blocks that `tokens` (the whole sequence so far, which only ever grows) fills
  // beyond those already hashed.
  void Extend(absl::Span<const int32_t> tokens);

  // hashes()[i] is the hash of logical block i.
  absl::Span<const uint64_t> hashes() const { return hashes_; }

 private:
  int32_t block_size_;
  std::vector<uint64_t> hashes_;
};

}  // namespace reflect
