#include "common/block_hash.h"

#include <cstddef>

namespace reflect {
namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

// Feeds the `num_bytes` low-order bytes of `value`, least significant first (little-endian by
// arithmetic, so the hash does not depend on the host's byte order).
uint64_t FeedLittleEndian(uint64_t hash, uint64_t value, int num_bytes) {
  for (int byte = 0; byte < num_bytes; ++byte) {
    hash ^= (value >> (8 * byte)) & 0xff;
    hash *= kFnvPrime;
  }
  return hash;
}

}  // namespace

uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens) {
  uint64_t hash = FeedLittleEndian(kFnvOffsetBasis, parent_hash, 8);
  for (const int32_t token : tokens) {
    hash = FeedLittleEndian(hash, static_cast<uint32_t>(token), 4);
  }
  return hash;
}

void BlockHashChain::Extend(absl::Span<const int32_t> tokens) {
  const auto block_size = static_cast<size_t>(block_size_);
  for (size_t start = hashes_.size() * block_size; start + block_size <= tokens.size();
       start += block_size) {
    const uint64_t parent = hashes_.empty() ? kRootBlockHash : hashes_.back();
    hashes_.push_back(HashBlock(parent, tokens.subspan(start, block_size)));
  }
}

}  // namespace reflect
