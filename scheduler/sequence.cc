#include "scheduler/sequence.h"

#include <utility>

namespace reflect {

std::string_view SequenceStateName(SequenceState state) {
  switch (state) {
    case SequenceState::kWaiting:
      return "waiting";
    case SequenceState::kPrefilling:
      return "prefilling";
    case SequenceState::kDecoding:
      return "decoding";
    case SequenceState::kPreempted:
      return "preempted";
    case SequenceState::kSwapped:
      return "swapped";
    case SequenceState::kFinished:
      return "finished";
  }
  return "unknown";
}

std::string_view RetireReasonName(RetireReason reason) {
  switch (reason) {
    case RetireReason::kNone:
      return "none";
    case RetireReason::kStopToken:
      return "stop";
    case RetireReason::kMaxTokens:
      return "length";
    case RetireReason::kMaxModelLength:
      return "model_length";
    case RetireReason::kCancelled:
      return "cancelled";
    case RetireReason::kDeadlineExceeded:
      return "deadline";
    case RetireReason::kExceedsKvCapacity:
      return "kv_capacity";
  }
  return "unknown";
}

Sequence::Sequence(SequenceRequest request, int32_t block_size)
    : id(request.id),
      token_ids(std::move(request.prompt_token_ids)),
      num_prompt_tokens(std::ssize(token_ids)),
      max_tokens(request.max_tokens),
      stop_token_ids(std::move(request.stop_token_ids)),
      priority(request.priority),
      arrival_time(request.arrival_time),
      deadline(request.deadline),
      block_hashes(block_size) {
  block_hashes.Extend(token_ids);
}

void Sequence::AppendToken(int32_t token_id) {
  token_ids.push_back(token_id);
  block_hashes.Extend(token_ids);
}

}  // namespace reflect
