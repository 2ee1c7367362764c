// A replica's prefix cache as a Bloom filter over its cached full-block hashes
// (reflect.internal.v1.PrefixCacheSummary; DESIGN §1, §5): the replica builds it from its block
// manager, the router tests a prompt's block hashes (common/block_hash.h) against it to prefer the
// replica that already holds the longest prefix. The exact bit layout and probe sequence are
// specified in proto/reflect/internal/v1/replica.proto; both sides use this file.
//
// Plain values; thread-safety: none (copy to share). Cost: k probes per insert or test.
#pragma once

#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace reflect {

struct PrefixSummary {
  int32_t block_size_tokens = 0;
  int32_t probe_count = 0;  // k
  std::string bits;         // m = 8 * bits.size() bits; empty: nothing cached
  int64_t inserted_blocks = 0;
};

// An empty filter of `size_bytes` bytes (> 0) with `probe_count` probes (> 0).
PrefixSummary MakePrefixSummary(int32_t block_size_tokens, int64_t size_bytes, int32_t probe_count);

// Sets the k bits of `block_hash`.
void InsertBlockHash(uint64_t block_hash, PrefixSummary& summary);

// True when every bit of `block_hash` is set (false positives possible, no false negatives).
bool MayContainBlockHash(const PrefixSummary& summary, uint64_t block_hash);

// How many leading hashes of `prompt_block_hashes` (the prompt's chained full-block hashes, in
// order) test present; stops at the first miss. 0 for an empty summary.
int64_t CountCachedLeadingBlocks(const PrefixSummary& summary,
                                 absl::Span<const uint64_t> prompt_block_hashes);

}  // namespace reflect
