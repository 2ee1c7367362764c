// Sequence: one request's state inside the scheduler (DESIGN §3) — its tokens, where it is in
// its lifecycle, and what orders it against the others. The block table lives in the
// BlockManager, keyed by the sequence id.
//
// Lifecycle (SequenceState):
//
//                admit                prompt computed           stop token / max_tokens /
//   kWaiting ─────────────▶ kPrefilling ─────────────▶ kDecoding ───max model length───▶ kFinished
//                             ▲      ▲                    ▲
//   kPreempted ───re-admit────┘      │ swap in            │ swap in (only the last token
//       ▲                            │ (a chunk left)     │          left to run)
//       │                         kSwapped ───────────────┘
//       │                            ▲
//       │ preempt: recompute         │ preempt: swap (KV copied to host)
//       └───────────────── kPrefilling or kDecoding
//
//   any state ──Cancel / deadline passed / outgrew the whole KV cache──▶ kFinished
//
// Ownership: owned by the Scheduler (pointer-stable). Thread-safety: none.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "common/block_hash.h"

namespace reflect {

enum class SequenceState { kWaiting, kPrefilling, kDecoding, kPreempted, kSwapped, kFinished };

enum class RetireReason {
  kNone,
  kStopToken,         // sampled an end-of-sequence or stop token id
  kMaxTokens,         // generated max_tokens tokens
  kMaxModelLength,    // prompt + generated reached the model's maximum length
  kCancelled,         // the client went away
  kDeadlineExceeded,  // dropped: the request's deadline passed before it finished
  kExceedsKvCapacity  // failed: the sequence outgrew the whole KV cache
};

std::string_view SequenceStateName(SequenceState state);
std::string_view RetireReasonName(RetireReason reason);

// What the engine hands the scheduler for a new request (already validated by the router).
struct SequenceRequest {
  int64_t id = 0;
  std::vector<int32_t> prompt_token_ids;
  int64_t max_tokens = 16;
  // Ids that end the sequence: the model's eos ids (unless ignore_eos) and the request's stop
  // token ids. Stop strings are matched on text by the router, which cancels.
  std::vector<int32_t> stop_token_ids;
  int32_t priority = 0;  // larger is served first; FCFS within a priority
  absl::Time arrival_time = absl::UnixEpoch();
  absl::Time deadline = absl::InfiniteFuture();
};

struct Sequence {
  Sequence(SequenceRequest request, int32_t block_size);

  int64_t num_tokens() const { return std::ssize(token_ids); }
  int64_t num_generated_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens not in the KV cache yet: the next step runs (a chunk of) them.
  int64_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
  // Appends a sampled token and hashes the block it completes, if any.
  void AppendToken(int32_t token_id);

  int64_t id;
  std::vector<int32_t> token_ids;  // the prompt, then the generated tokens
  int64_t num_prompt_tokens;
  int64_t max_tokens;
  std::vector<int32_t> stop_token_ids;
  int32_t priority;
  absl::Time arrival_time;
  absl::Time deadline;

  SequenceState state = SequenceState::kWaiting;
  RetireReason retire_reason = RetireReason::kNone;
  int64_t num_computed_tokens = 0;  // tokens whose KV the cache holds
  bool awaiting_token = false;      // the step in flight samples this sequence's next token
  int32_t num_preemptions = 0;
  BlockHashChain block_hashes;  // of token_ids' full blocks, for the prefix cache
};

}  // namespace reflect
