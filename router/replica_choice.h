// The router's replica choice (DESIGN §1, §4): which ready replica gets a new request. A pure
// function of plain views of the replicas and the prompt, so its rules are unit tested with tables
// (tests/replica_choice_test.cc); the request router feeds it a snapshot of its replica pool.
//
// The rule:
//  1. Estimate each replica's outstanding work in requests. The replica's own report (running +
//     waiting) covers every router's requests but is up to one poll interval old; this router's
//     own count is exact. So the estimate is the report corrected by how this router's count moved
//     since that report, and never less than this router's count.
//  2. Replicas whose estimate is within a margin of the least (an absolute number of requests or a
//     fraction of the least, whichever is larger) are near-ties.
//  3. Among near-ties, take the one whose prefix-cache summary holds the longest leading run of the
//     prompt's full blocks (counted in tokens, in case block sizes differ): its prefill is that
//     much shorter, and the shared reflection system prompt is computed once per replica instead of
//     once per request. A false positive of the Bloom filter only costs a less good placement.
//  4. Remaining ties: less estimated work, then fewer waiting prompt tokens, then lower KV usage,
//     then the lower index (the caller's order).
//
// Why a margin and not a weighted score: affinity must never pile requests onto one replica while
// another idles, and a margin bounds that imbalance in requests, a unit operators understand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "common/prefix_summary.h"

namespace reflect {

// One ready replica as the choice sees it.
struct ReplicaCandidate {
  int64_t outstanding_requests = 0;            // this router's requests on it now
  int64_t outstanding_requests_at_report = 0;  // this router's count when `reported_*` was taken
  int64_t reported_running = 0;
  int64_t reported_waiting = 0;
  int64_t reported_waiting_prompt_tokens = 0;
  double kv_cache_usage_ratio = 0.0;  // [0, 1]
  // What its prefix cache holds; null or empty: nothing known.
  std::shared_ptr<const PrefixSummary> prefix_summary;
};

struct ReplicaChoiceOptions {
  // A replica is a near-tie when its work is at most least + max(margin_requests,
  // margin_fraction * least).
  int64_t load_margin_requests = 2;
  double load_margin_fraction = 0.25;
};

// The estimated outstanding requests of `candidate` (rule 1).
int64_t EstimatedOutstandingRequests(const ReplicaCandidate& candidate);

// What the choice saw, for logs and tests.
struct ReplicaChoice {
  size_t index = 0;  // into the candidates
  // Prompt tokens in the leading full blocks its summary holds; 0 when not computed (a single
  // near-tie, or no summaries).
  int64_t cached_prompt_tokens = 0;
};

// The replica for a prompt, or nullopt when `candidates` is empty. Cost: O(candidates) plus, only
// when two or more near-ties carry a summary, one hash of the prompt per distinct block size and
// k Bloom probes per leading block tested.
std::optional<ReplicaChoice> ChooseReplica(absl::Span<const ReplicaCandidate> candidates,
                                           absl::Span<const int32_t> prompt_token_ids,
                                           const ReplicaChoiceOptions& options = {});

}  // namespace reflect
