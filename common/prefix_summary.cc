#include "common/prefix_summary.h"

#include <cassert>

namespace reflect {
namespace {

// Walks the k bit indexes of `block_hash` as replica.proto specifies them,
// (lo + j * step) mod m with lo = h mod 2^32 and step = (h >> 32) | 1, calling visit(bit) for each
// until it returns false. Adding `step mod m` and wrapping once gives exactly that sequence with
// two divisions per hash instead of one per probe; the odd step keeps the probes from collapsing
// when m is a power of two.
template <typename Visitor>
bool ForEachProbe(const PrefixSummary& summary, uint64_t block_hash, Visitor visit) {
  const uint64_t num_bits = 8 * static_cast<uint64_t>(summary.bits.size());
  uint64_t bit = (block_hash & 0xffffffffULL) % num_bits;
  const uint64_t step = ((block_hash >> 32) | 1) % num_bits;
  for (int32_t probe = 0; probe < summary.probe_count; ++probe) {
    if (!visit(bit)) return false;
    bit += step;
    if (bit >= num_bits) bit -= num_bits;
  }
  return true;
}

}  // namespace

PrefixSummary MakePrefixSummary(int32_t block_size_tokens, int64_t size_bytes,
                                int32_t probe_count) {
  assert(size_bytes > 0 && probe_count > 0 && "an empty Bloom filter cannot hold hashes");
  return PrefixSummary{.block_size_tokens = block_size_tokens,
                       .probe_count = probe_count,
                       .bits = std::string(static_cast<size_t>(size_bytes), '\0'),
                       .inserted_blocks = 0};
}

void InsertBlockHash(uint64_t block_hash, PrefixSummary& summary) {
  if (summary.bits.empty()) return;
  char* const bytes = summary.bits.data();
  ForEachProbe(summary, block_hash, [bytes](uint64_t bit) {
    bytes[bit / 8] =
        static_cast<char>(static_cast<unsigned char>(bytes[bit / 8]) | (1u << (bit % 8)));
    return true;
  });
  ++summary.inserted_blocks;
}

bool MayContainBlockHash(const PrefixSummary& summary, uint64_t block_hash) {
  if (summary.bits.empty() || summary.probe_count <= 0) return false;
  const char* const bytes = summary.bits.data();
  return ForEachProbe(summary, block_hash, [bytes](uint64_t bit) {
    return ((static_cast<unsigned char>(bytes[bit / 8]) >> (bit % 8)) & 1u) != 0;
  });
}

int64_t CountCachedLeadingBlocks(const PrefixSummary& summary,
                                 absl::Span<const uint64_t> prompt_block_hashes) {
  int64_t count = 0;
  for (const uint64_t block_hash : prompt_block_hashes) {
    if (!MayContainBlockHash(summary, block_hash)) break;
    ++count;
  }
  return count;
}

}  // namespace reflect
