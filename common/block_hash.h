// Chained content hashes of full KV blocks: the keys of a replica's prefix cache (DESIGN §5) and
// what the router tests against a replica's PrefixCacheSummary (common/prefix_summary.h). Both
// sides must hash identically, so the function lives here, in common/, and is exactly the one
// reflect.internal.v1.BlockHashFunction FNV1A_64_CHAINED specifies (replica.proto):
//
//   h_i = FNV-1a-64(8 little-endian bytes of h_{i-1} ‖ 4 little-endian bytes of each token id)
//   h_{-1} = 0
//
// Chaining makes equal hashes mean equal whole prefixes, not just equal blocks. Only full blocks
// get a hash. The function is fixed (not seeded per process): the same prompt hashes the same way
// in every replica, router and run. It is 64 bits wide and not verified against the tokens: two
// different prefixes collide with probability about 2^-64 per pair, and FNV is not built to
// resist prompts crafted to collide.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace reflect {

// The parent hash of block 0 (h_{-1}).
inline constexpr uint64_t kRootBlockHash = 0;

// The hash of one full block given its parent's hash. O(tokens): one multiply per byte.
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
