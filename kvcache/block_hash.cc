#include "kvcache/block_hash.h"

#include <cstddef>

namespace reflect {
namespace {

// The 64-bit finalizer of MurmurHash3: a bijection with full avalanche.
uint64_t Mix(uint64_t value) {
  value ^= value >> 33;
  value *= 0xff51afd7ed558ccdULL;
  value ^= value >> 33;
  value *= 0xc4ceb9fe1a85ec53ULL;
  value ^= value >> 33;
  return value;
}

}  // namespace

uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens) {
  uint64_t hash = Mix(parent_hash ^ (0x9e3779b97f4a7c15ULL * (tokens.size() + 1)));
  for (const int32_t token : tokens) {
    hash = Mix(hash ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) + 0x9e3779b97f4a7c15ULL +
                       (hash << 6) + (hash >> 2)));
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
