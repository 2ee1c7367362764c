// Step plan codec: the bytes the replica leader broadcasts to every rank each step (DESIGN §3).
//
// Format, version 1. Every integer is a LEB128 varint (7 bits a byte, low bits first, at most 10
// bytes); signed values are zigzag-coded first (0, -1, 1, -2, … → 0, 1, 2, 3, …).
//
//   plan      := 0x01 (version) copies swaps(swap_out) swaps(swap_in) sequences
//   copies    := count { zigzag(source_block) zigzag(destination_block) }
//   swaps     := count { zigzag(device_block) zigzag(host_block) }
//   sequences := count { sequence }
//   sequence  := zigzag(sequence_id − previous sequence_id)      the first against 0, mod 2^64
//                (token count << 1 | needs_logits)
//                zigzag(start_position)
//                { zigzag(token_id) }                            token count of them
//                block count [ zigzag(block 0) { zigzag(block i − block i−1) } ]
//
// Delta coding makes the usual plan small: ids ascend, and blocks allocated together are
// neighbours. A decode step takes about 9 bytes per sequence plus, per block of its table, one
// byte when the blocks are neighbours and three when a 40 000-block pool hands them out at random
// (256 sequences of 100-1100 tokens, 9 936 blocks: 12 KB and 28 KB).
//
// Decoding trusts nothing: truncated input, over-long varints, values outside int32 where the
// field is int32, counts larger than the bytes left, a wrong version or trailing bytes are
// INVALID_ARGUMENT. It checks only the encoding; the backend validates the plan itself.
// Thread-safety: pure functions. Cost: linear in the plan.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "scheduler/step_plan.h"

namespace reflect {

std::string EncodeStepPlan(const StepPlan& plan);

absl::StatusOr<StepPlan> DecodeStepPlan(absl::string_view bytes);

}  // namespace reflect
