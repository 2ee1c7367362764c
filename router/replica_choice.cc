#include "router/replica_choice.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "common/block_hash.h"

namespace reflect {
namespace {

bool HasSummary(const ReplicaCandidate& candidate) {
  return candidate.prefix_summary != nullptr && !candidate.prefix_summary->bits.empty() &&
         candidate.prefix_summary->block_size_tokens > 0;
}

// Prompt block hashes per block size, computed once per size on first use (replicas of one
// deployment share a block size, so this is normally one hash of the prompt).
class PromptBlockHashes {
 public:
  explicit PromptBlockHashes(absl::Span<const int32_t> prompt_token_ids)
      : prompt_token_ids_(prompt_token_ids) {}

  absl::Span<const uint64_t> ForBlockSize(int32_t block_size) {
    for (const auto& [size, chain] : chains_) {
      if (size == block_size) return chain.hashes();
    }
    BlockHashChain chain(block_size);
    chain.Extend(prompt_token_ids_);
    chains_.emplace_back(block_size, std::move(chain));
    return chains_.back().second.hashes();
  }

 private:
  absl::Span<const int32_t> prompt_token_ids_;
  std::vector<std::pair<int32_t, BlockHashChain>> chains_;
};

}  // namespace

int64_t EstimatedOutstandingRequests(const ReplicaCandidate& candidate) {
  const int64_t reported = candidate.reported_running + candidate.reported_waiting;
  const int64_t moved_since_report =
      candidate.outstanding_requests - candidate.outstanding_requests_at_report;
  return std::max(candidate.outstanding_requests, reported + moved_since_report);
}

std::optional<ReplicaChoice> ChooseReplica(absl::Span<const ReplicaCandidate> candidates,
                                           absl::Span<const int32_t> prompt_token_ids,
                                           const ReplicaChoiceOptions& options) {
  if (candidates.empty()) return std::nullopt;
  std::vector<int64_t> work(candidates.size());
  int64_t least = 0;
  for (size_t index = 0; index < candidates.size(); ++index) {
    work[index] = EstimatedOutstandingRequests(candidates[index]);
    least = index == 0 ? work[index] : std::min(least, work[index]);
  }
  const auto fractional_margin =
      static_cast<int64_t>(std::floor(options.load_margin_fraction * static_cast<double>(least)));
  const int64_t limit = least + std::max(options.load_margin_requests, fractional_margin);

  std::vector<size_t> near_ties;
  int summaries = 0;
  for (size_t index = 0; index < candidates.size(); ++index) {
    if (work[index] > limit) continue;
    near_ties.push_back(index);
    if (HasSummary(candidates[index])) ++summaries;
  }

  // Hashing the prompt is only worth it when the summaries can change the answer.
  std::vector<int64_t> cached(candidates.size(), 0);  // prompt tokens
  if (near_ties.size() > 1 && summaries > 0) {
    PromptBlockHashes hashes(prompt_token_ids);
    for (const size_t index : near_ties) {
      if (!HasSummary(candidates[index])) continue;
      const PrefixSummary& summary = *candidates[index].prefix_summary;
      cached[index] =
          summary.block_size_tokens *
          CountCachedLeadingBlocks(summary, hashes.ForBlockSize(summary.block_size_tokens));
    }
  }

  // Better = more cached prompt tokens, then less work, fewer waiting prompt tokens, lower KV
  // usage; the first index wins full ties because std::min_element keeps the first of equals.
  const auto rank = [&](size_t index) {
    const ReplicaCandidate& candidate = candidates[index];
    return std::make_tuple(-cached[index], work[index], candidate.reported_waiting_prompt_tokens,
                           candidate.kv_cache_usage_ratio);
  };
  const size_t best = *std::min_element(near_ties.begin(), near_ties.end(),
                                        [&](size_t a, size_t b) { return rank(a) < rank(b); });
  return ReplicaChoice{.index = best, .cached_prompt_tokens = cached[best]};
}

}  // namespace reflect
